# journal-parquet %postun (%systemd_postun_with_restart): reload units; on upgrade, restart the
# collector if it runs, so that the new binary takes over from the saved position.
systemctl daemon-reload || :
if [ "$1" -ge 1 ]; then
    systemctl try-restart journal-parquet.service || :
fi
# The web console's token, made by %post: gone with the package (not on upgrade).
if [ "$1" -eq 0 ]; then
    rm -f /etc/journal-parquet/web.token
fi
