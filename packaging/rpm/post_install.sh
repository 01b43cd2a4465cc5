# journal-parquet %post: create the service user, then what %systemd_post does, plus a start: on
# first install the preset file enables the collector and its timer, and they are started.
systemd-sysusers journal-parquet.conf || :
systemctl daemon-reload || :
if [ "$1" -eq 1 ]; then
    systemctl --no-reload preset journal-parquet.service jp-flush.timer || :
    if systemctl is-enabled --quiet journal-parquet.service; then
        systemctl start journal-parquet.service jp-flush.timer || :
    fi
fi
