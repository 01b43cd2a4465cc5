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
# The web console's token (jp-web.socket is installed disabled), made once: 32 random bytes as hex,
# readable by root and the group journal-parquet only.
if [ ! -e /etc/journal-parquet/web.token ]; then
    (umask 077; od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >/etc/journal-parquet/web.token.new)
    chgrp journal-parquet /etc/journal-parquet/web.token.new || :
    chmod 0640 /etc/journal-parquet/web.token.new
    mv /etc/journal-parquet/web.token.new /etc/journal-parquet/web.token
fi
