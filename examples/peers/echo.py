# echo.py: an ipcbus peer in Python that echoes every frame back (same type),
# adding "echoedBy": "python" to JSON objects. The wire format: docs/wire-format.md
# Started by ipcbus spawn(): fds 3 and 4 (IPCBUS_PIPE). Otherwise: echo.py <fifo-to-read> <fifo-to-write>
import json, os, struct, sys

HEADER = struct.Struct("<2sBBII")  # magic "IB", version 1, flags 0, type u32, length u32

def read_exact(fd, n):
    """n bytes, or None when the stream ends before the first one."""
    data = b""
    while len(data) < n:
        chunk = os.read(fd, n - len(data))
        if not chunk:
            if data:
                raise EOFError("stream ended inside a frame")
            return None
        data += chunk
    return data

def read_frame(fd, max_size=16 << 20):
    header = read_exact(fd, HEADER.size)
    if header is None:
        return None  # every writer has closed
    magic, version, flags, type_, length = HEADER.unpack(header)
    if magic != b"IB" or version != 1 or flags != 0 or type_ == 0 or length > max_size:
        raise ValueError("not an ipcbus v1 frame")
    payload = read_exact(fd, length) if length else b""
    if payload is None:
        raise EOFError("stream ended inside a frame")
    return type_, payload

def write_frame(fd, type_, payload):
    frame = HEADER.pack(b"IB", 1, 0, type_, len(payload)) + payload
    while frame:  # a frame of at most 4096 bytes goes in one atomic write
        frame = frame[os.write(fd, frame):]

if "IPCBUS_PIPE" in os.environ and len(sys.argv) == 1:
    version, rfd, wfd, rino, wino = os.environ["IPCBUS_PIPE"].split(":")
    rfd, wfd = int(rfd), int(wfd)
    if version != "1" or os.fstat(rfd).st_ino != int(rino) or os.fstat(wfd).st_ino != int(wino):
        sys.exit("IPCBUS_PIPE does not describe this process's descriptors")
else:
    rfd = os.open(sys.argv[1], os.O_RDONLY)
    wfd = os.open(sys.argv[2], os.O_WRONLY)

while (frame := read_frame(rfd)) is not None:
    type_, payload = frame
    value = json.loads(payload)  # ipcbus's default codec: JSON, UTF-8
    if isinstance(value, dict):
        value["echoedBy"] = "python"
    write_frame(wfd, type_, json.dumps(value).encode())
