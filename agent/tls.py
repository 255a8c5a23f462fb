"""The uplink's TLS context, shared by the agent's uplink and ``liftwatch check``.

Built in one place so that what ``check`` tries on the car roof is exactly what the
agent will do: server verification on, TLS 1.2 or later, the client certificate when
the config names one. A file that cannot be used is named (never its contents).
"""

from __future__ import annotations

import ssl

from liftwatch.agent.settings import UplinkSettings

#: what the technician does about an unusable TLS file
FIX = ("install the platform operator's file there (deploy/INSTALL.md, step 3) or point the "
       "config at it")


class UplinkError(RuntimeError):
    """The uplink cannot be set up as configured (bad TLS files, bad settings)."""


def make_tls_context(settings: UplinkSettings) -> ssl.SSLContext:
    """Client TLS context: verification on, TLS >= 1.2, optional client certificate.

    Raises ``UplinkError`` naming the file (not its contents) when a file is unusable.
    """
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                         cafile=settings.ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"uplink.ca_file {settings.ca_file!r} unusable: {exc}; {FIX}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if settings.cert_file or settings.key_file:
        if not (settings.cert_file and settings.key_file):
            raise UplinkError("uplink.cert_file and uplink.key_file go together (mutual TLS)")
        try:
            ctx.load_cert_chain(settings.cert_file, settings.key_file)
        except (OSError, ssl.SSLError) as exc:
            # The message of load_cert_chain names no secret; the key path is not logged.
            raise UplinkError(f"client certificate {settings.cert_file!r} or its key "
                              f"unusable: {getattr(exc, 'reason', None) or exc}; {FIX}") from None
    return ctx
