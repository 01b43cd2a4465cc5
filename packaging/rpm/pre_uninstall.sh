# journal-parquet %preun (%systemd_preun): on removal (not upgrade), disable and stop. The archive
# in /var/lib/journal-parquet is kept.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now jp-flush.timer journal-parquet.service || :
    systemctl stop jp-flush.service || :
fi
