# journal-parquet %preun (%systemd_preun): on removal (not upgrade), disable and stop. The archive
# in /var/lib/journal-parquet is kept.
if [ "$1" -eq 0 ]; then
    systemctl --no-reload disable --now jp-flush.timer journal-parquet.service jp-upload.timer \
        jp-web.socket || :
    systemctl stop jp-flush.service jp-upload.service jp-web.service || :
    # The namespace instances (journal-parquet@NAME.service, jp-flush@NAME.timer) enabled.
    for link in /etc/systemd/system/*.wants/journal-parquet@?*.service \
        /etc/systemd/system/*.wants/jp-flush@?*.timer; do
        [ -L "$link" ] && systemctl --no-reload disable --now "${link##*/}" || :
    done
    systemctl stop 'jp-flush@*.service' 'journal-parquet@*.service' || :
fi
