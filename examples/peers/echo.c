/* echo.c: an ipcbus peer in C. It echoes every frame back: same type, same payload.
 * The wire format is in docs/wire-format.md.
 *
 *   cc -O2 -o echo examples/peers/echo.c
 *   ./echo <fifo-to-read> <fifo-to-write>     (over two FIFOs), or
 *   started by ipcbus spawn("./echo"): over the pipes at fds 3 and 4 (IPCBUS_PIPE) */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum { HEADER = 12, MAX_PAYLOAD = 1 << 20 };

static void put_u32(uint8_t *p, uint32_t v) { p[0] = v; p[1] = v >> 8; p[2] = v >> 16; p[3] = v >> 24; }
static uint32_t get_u32(const uint8_t *p) { return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24; }

/* 1: got n bytes; 0: end of stream before the first byte; -1: error or truncated. */
static int read_full(int fd, uint8_t *buf, size_t n) {
  for (size_t got = 0; got < n;) {
    ssize_t r = read(fd, buf + got, n - got);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return r == 0 && got == 0 ? 0 : -1;
    got += (size_t)r;
  }
  return 1;
}

static int write_full(int fd, const uint8_t *buf, size_t n) {
  for (size_t put = 0; put < n;) {
    ssize_t w = write(fd, buf + put, n - put);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -1;
    put += (size_t)w;
  }
  return 0;
}

/* One write(2) per frame: atomic on a pipe or FIFO when HEADER + len <= 4096. */
static int write_frame(int fd, uint32_t type, const uint8_t *payload, uint32_t len) {
  static uint8_t frame[HEADER + MAX_PAYLOAD];
  if (type == 0 || len > MAX_PAYLOAD) return -1;
  frame[0] = 0x49; frame[1] = 0x42; frame[2] = 1; frame[3] = 0; /* "IB", version 1, flags 0 */
  put_u32(frame + 4, type);
  put_u32(frame + 8, len);
  memcpy(frame + HEADER, payload, len);
  return write_full(fd, frame, HEADER + len);
}

/* Returns the payload length, -2 at a clean end of stream, -1 on bad or truncated data. */
static long read_frame(int fd, uint32_t *type, uint8_t *payload) {
  uint8_t h[HEADER];
  int r = read_full(fd, h, HEADER);
  if (r <= 0) return r == 0 ? -2 : -1;
  if (h[0] != 0x49 || h[1] != 0x42 || h[2] != 1 || h[3] != 0) return -1;
  *type = get_u32(h + 4);
  uint32_t len = get_u32(h + 8);
  if (*type == 0 || len > MAX_PAYLOAD) return -1; /* never trust a length */
  return read_full(fd, payload, len) < 0 ? -1 : (long)len;
}

int main(int argc, char **argv) {
  int in = 3, out = 4;
  const char *env = getenv("IPCBUS_PIPE");
  if (argc == 3) {
    in = open(argv[1], O_RDONLY);  /* blocks until a writer opens the FIFO */
    out = open(argv[2], O_WRONLY); /* blocks until a reader opens it */
  } else {
    unsigned long long ino[2];
    struct stat st[2];
    if (!env || sscanf(env, "1:%d:%d:%llu:%llu", &in, &out, &ino[0], &ino[1]) != 4 ||
        fstat(in, &st[0]) || fstat(out, &st[1]) || !S_ISFIFO(st[0].st_mode) ||
        !S_ISFIFO(st[1].st_mode) || st[0].st_ino != ino[0] || st[1].st_ino != ino[1]) {
      fprintf(stderr, "not started by ipcbus spawn(); usage: %s <in-fifo> <out-fifo>\n", argv[0]);
      return 2;
    }
  }
  if (in < 0 || out < 0) return perror("open"), 1;
  static uint8_t payload[MAX_PAYLOAD];
  uint32_t type;
  long len;
  while ((len = read_frame(in, &type, payload)) >= 0)
    if (write_frame(out, type, payload, (uint32_t)len) < 0) return perror("write"), 1;
  return len == -2 ? 0 : 1; /* -2: the peer closed; -1: malformed frame */
}
