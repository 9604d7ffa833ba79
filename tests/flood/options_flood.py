#!/usr/bin/env python3
"""Send SIP OPTIONS to TARGET at RATE packets/s for SECONDS from SOURCE_IP.

Each request has a new branch and Call-ID, as a scanner's would, so the
target cannot treat them as retransmissions. Prints the number sent.

usage: options_flood.py TARGET_HOST:PORT SOURCE_IP RATE SECONDS
"""
import socket
import sys
import time

host, port = sys.argv[1].rsplit(":", 1)
target = (host, int(port))
source, rate, seconds = sys.argv[2], float(sys.argv[3]), float(sys.argv[4])

sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((source, 0))
sock.setblocking(False)
local = "%s:%d" % sock.getsockname()
tick = 0.01  # send in 10 ms batches: smooth enough, cheap in Python
per_tick = rate * tick
start = time.monotonic()
sent = 0
while True:
    elapsed = time.monotonic() - start
    if elapsed >= seconds:
        break
    due = int(elapsed * rate) + 1
    while sent < due:
        msg = (
            f"OPTIONS sip:{sent % 1000}@{host}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {local};branch=z9hG4bKf{sent}x{int(start)}\r\n"
            f"From: <sip:scan@{local}>;tag=f{sent}\r\n"
            f"To: <sip:{sent % 1000}@{host}:{port}>\r\n"
            f"Call-ID: flood-{sent}-{int(start)}\r\n"
            "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
        )
        try:
            sock.sendto(msg.encode(), target)
        except (BlockingIOError, ConnectionRefusedError):
            pass
        sent += 1
    # Drain answers so they cost the kernel nothing.
    try:
        while sock.recv(65536):
            pass
    except (BlockingIOError, ConnectionRefusedError):
        pass
    time.sleep(tick)
print(sent, flush=True)
