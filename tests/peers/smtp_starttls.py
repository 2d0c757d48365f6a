"""An SMTP server for the STARTTLS tests (`..._on_aiosmtpd_starttls`).

PyPI's aiosmtpd with STARTTLS required (`require_starttls`) and a login
required (`auth_required`, `auth_require_tls`: no AUTH before STARTTLS), its
certificate (for 127.0.0.1) issued at start by a CA that PyPI's `trustme`
makes then: the CA's certificate is written to `--ca` before the port is
opened, so a test that reaches the port finds it. The login is `--user` with
the password in the environment variable FLOW_TEST_SMTPS_PASSWORD (never in
the argument vector). Each mail accepted is written as one JSON file in
`--mails` before the server answers 250: whether the session was TLS, the
login it authenticated with, the envelope and the content.

Usage: python smtp_starttls.py --port PORT --ca FILE --mails DIR --user NAME
"""

import argparse
import json
import os
import ssl
import threading
import uuid

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Keeper:
    """Writes each accepted mail, with what the session was, to a file."""

    def __init__(self, mails):
        self.mails = mails

    async def handle_DATA(self, server, session, envelope):
        record = {
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "login": (session.login_data or b"").decode("utf-8", "replace"),
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "content": envelope.content.decode("utf-8", "replace"),
        }
        name = uuid.uuid4().hex
        partial = os.path.join(self.mails, f".{name}.tmp")
        with open(partial, "w", encoding="utf-8") as out:
            json.dump(record, out)
        os.rename(partial, os.path.join(self.mails, f"{name}.json"))
        return "250 OK"


def authenticator(user, password):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca", required=True)
    parser.add_argument("--mails", required=True)
    parser.add_argument("--user", required=True)
    args = parser.parse_args()
    password = os.environ["FLOW_TEST_SMTPS_PASSWORD"]
    os.makedirs(args.mails, exist_ok=True)

    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(args.ca)

    controller = Controller(
        Keeper(args.mails),
        hostname="127.0.0.1",
        port=args.port,
        tls_context=context,
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=authenticator(args.user, password),
    )
    controller.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
