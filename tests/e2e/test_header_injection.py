"""Header injection through DSN parameters and reply texts (issue 18,
item 4): an ORCPT or ENVID that decodes to CR LF is refused with 501 5.5.4,
and the bounce of a message whose recipient a server refused with a hostile
reply text carries no line of anyone's choosing.

The receiving side is a small SMTP server in this process, reached as
relayd's smarthost, so no DNS is involved."""
import smtplib
import socket
import socketserver
import threading
import time
import uuid

from relayd_harness import Relayd

# U+0085 (NEL) in a server's reply: the reply parser takes it (it is no C0
# control), and a reader that splits lines on it, as Python's splitlines
# does, would see a line of the server's choosing.
HOSTILE_REPLY = "550 5.1.1 no such user\u0085Injected-Line: from-the-server"


class Sink(socketserver.ThreadingTCPServer):
    """Accepts every recipient but those whose local part starts with
    "reject", which get HOSTILE_REPLY; keeps each message's data."""
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.messages = []
        self.lock = threading.Lock()


class SinkHandler(socketserver.StreamRequestHandler):
    timeout = 30

    def send(self, line):
        self.wfile.write((line + "\r\n").encode())
        self.wfile.flush()

    def handle(self):
        self.send("220 sink.test ESMTP")
        rcpts = []
        try:
            while True:
                line = self.rfile.readline(4096)
                if not line:
                    return
                line = line.rstrip(b"\r\n").decode("utf-8", "replace")
                verb = line.split(" ", 1)[0].upper()
                if verb in ("EHLO", "HELO"):
                    self.send("250-sink.test\r\n250-8BITMIME\r\n250 DSN" if verb == "EHLO" else "250 sink.test")
                elif verb == "MAIL":
                    rcpts = []
                    self.send("250 2.1.0 ok")
                elif verb == "RCPT":
                    addr = line[8:].split(">")[0].lstrip("<")
                    if addr.startswith("reject"):
                        self.send(HOSTILE_REPLY)
                    else:
                        rcpts.append(addr)
                        self.send("250 2.1.5 ok")
                elif verb == "DATA":
                    self.send("354 go ahead")
                    data = []
                    while True:
                        l = self.rfile.readline(100000)
                        if not l or l == b".\r\n":
                            break
                        data.append(l[1:] if l.startswith(b"..") else l)
                    with self.server.lock:
                        self.server.messages.append({"to": rcpts, "data": b"".join(data).decode("utf-8", "replace")})
                    self.send("250 2.0.0 ok")
                elif verb in ("RSET", "NOOP"):
                    self.send("250 2.0.0 ok")
                elif verb == "QUIT":
                    self.send("221 2.0.0 bye")
                    return
                else:
                    self.send("502 5.5.1 not implemented")
        except (ConnectionError, socket.timeout):
            return


def test_orcpt_with_cr_lf_is_refused_and_no_bounce_carries_an_injected_line(tmp_path):
    sink = Sink()
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    relayd = Relayd(tmp_path / "r", relay_domains=(),
                    outbound=f'default_level = "none"\nsmarthost = "sink"\n'
                             f'[[outbound.relay]]\nname = "sink"\naddress = "127.0.0.1:{sink.server_address[1]}"\n'
                             f'level = "none"\n').start()
    try:
        tag = f"inject-{uuid.uuid4().hex[:6]}"
        with smtplib.SMTP("127.0.0.1", relayd.smtp_port, timeout=10) as c:
            c.ehlo("client.test")
            envid_reply = c.docmd("MAIL FROM:<s@sender.example> ENVID=e+0D+0AInjected-Line:+20yes")
            c.rset()
            assert c.docmd(f"MAIL FROM:<s@sender.example> ENVID={tag}")[0] == 250
            orcpt_reply = c.docmd("RCPT TO:<reject-crlf@hostile.example> NOTIFY=FAILURE "
                                  "ORCPT=rfc822;x+0D+0A+0D+0AInjected-Line:+20yes")
            assert c.docmd("RCPT TO:<reject@hostile.example> NOTIFY=FAILURE "
                           "ORCPT=rfc822;reject+40hostile.example")[0] == 250
            code, _ = c.data(f"Subject: {tag}\r\n\r\nbody\r\n")
            assert code == 250

        def bounce():
            with sink.lock:
                return next((m for m in sink.messages if "multipart/report" in m["data"] and tag in m["data"]), None)

        deadline = time.monotonic() + 30
        while bounce() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        dsn = bounce()
        assert dsn is not None, relayd.log_text()[-3000:]
        assert dsn["to"] == ["s@sender.example"]
        text = dsn["data"]
        # splitlines breaks on CR, LF, NEL, U+2028 and the rest: no reader's
        # idea of a line may start where a client or server chose.
        injected = [l for l in text.splitlines() if l.startswith("Injected-Line")]
        assert not injected, text
        assert "Original-Recipient: rfc822;reject@hostile.example" in text
        assert "no such user\\x{85}Injected-Line: from-the-server" in text, "the server's words, escaped"
        assert envid_reply[0] == 501 and envid_reply[1].startswith(b"5.5.4"), envid_reply
        assert orcpt_reply[0] == 501 and orcpt_reply[1].startswith(b"5.5.4"), orcpt_reply
    finally:
        relayd.stop()
        sink.shutdown()
        sink.server_close()
