"""aiosmtpd's Mailbox handler, except that it refuses for good (550) every
recipient whose address starts with "refused-", as a server that knows no
such mailbox does."""

from aiosmtpd.handlers import Mailbox


class RefusingMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("refused-"):
            return "550 5.1.1 no such mailbox here"
        envelope.rcpt_tos.append(address)
        return "250 OK"
