/*
 * ipcbench: the C baseline of ipcbus's benchmark (bench/bench.ts builds it
 * with `cc -O2` into a temporary directory and runs it).
 *
 * The same mechanism and wire format as ipcbus's `pipe:` and `fifo:`
 * transports, written the way a careful C programmer would: blocking
 * descriptors, one writev(2) per frame (12-byte header + payload), and a
 * buffered reader that takes as many bytes as the kernel has (64 KiB buffer,
 * growing for larger frames), so several small frames cost one read(2).
 *
 * Frame: 'I' 'B' version=1 flags=0, u32 LE type, u32 LE length, payload.
 * Protocol (the same as bench/echo_child.ts speaks):
 *   type 1  echo this frame back            (round trip)
 *   type 2  payload u32 count: expect count frames of type 3, then answer type 4
 *   type 3  data frame, counted
 *   type 4  "done" (consumer -> producer)
 * The child exits at end of stream.
 *
 * With SPIN_US > 0 (the environment variable IPCBENCH_SPIN_US), descriptors
 * are non-blocking instead and a read that finds nothing retries for up to
 * SPIN_US µs before parking in poll(2): the strategy ipcbus uses, to tell the
 * cost of the strategy from the cost of the library.
 *
 * Usage: ipcbench pipe|fifo rt|tp SIZE COUNT REPS SECONDS [FIFO_DIR]
 *   rt: up to COUNT timed round trips per repetition (after a warm-up),
 *       stopping after SECONDS (when > 0) once 1000 are done; prints
 *       {"p50":µs,"p99":µs,"mean":µs,"n":done} per repetition.
 *   tp: COUNT one-way frames per repetition, timed from the first send until
 *       the consumer's "done" arrives; prints {"seconds":s,"count":COUNT}.
 * One JSON object per line on stdout; errors on stderr with exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEADER 12
#define T_ECHO 1
#define T_BEGIN 2
#define T_DATA 3
#define T_DONE 4

static void die(const char *what) {
  fprintf(stderr, "ipcbench: %s: %s\n", what, strerror(errno));
  exit(1);
}

static void fail(const char *what) {
  fprintf(stderr, "ipcbench: %s\n", what);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

/* 0: blocking descriptors. Otherwise non-blocking, spinning this long on reads. */
static double spin_us = 0;

static void wait_fd(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  while (poll(&p, 1, -1) < 0)
    if (errno != EINTR) die("poll");
}

static void set_mode(int fd) {
  if (spin_us > 0 && fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) != 0) die("fcntl");
}

/* ---- frames ------------------------------------------------------------ */

static void put_u32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void make_header(uint8_t *h, uint32_t type, uint32_t length) {
  h[0] = 'I';
  h[1] = 'B';
  h[2] = 1;
  h[3] = 0;
  put_u32(h + 4, type);
  put_u32(h + 8, length);
}

/* Writes the whole iovec list, retrying partial writes and EINTR. */
static void write_all(int fd, struct iovec *iov, int count) {
  while (count > 0) {
    ssize_t n = writev(fd, iov, count);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) {
        wait_fd(fd, POLLOUT);
        continue;
      }
      die("writev");
    }
    while (count > 0 && (size_t)n >= iov->iov_len) {
      n -= (ssize_t)iov->iov_len;
      iov++;
      count--;
    }
    if (count > 0) {
      iov->iov_base = (uint8_t *)iov->iov_base + n;
      iov->iov_len -= (size_t)n;
    }
  }
}

static void send_frame(int fd, uint32_t type, const uint8_t *payload, uint32_t length) {
  uint8_t header[HEADER];
  make_header(header, type, length);
  struct iovec iov[2] = {{header, HEADER}, {(void *)payload, length}};
  write_all(fd, iov, length > 0 ? 2 : 1);
}

typedef struct {
  int fd;
  uint8_t *buf;
  size_t cap, start, end;
} reader_t;

typedef struct {
  uint32_t type, length;
  uint8_t *frame; /* header + payload, valid until the next read */
} frame_t;

static void reader_init(reader_t *r, int fd) {
  r->fd = fd;
  r->cap = 64 * 1024;
  r->buf = malloc(r->cap);
  if (!r->buf) fail("out of memory");
  r->start = r->end = 0;
}

/* Next frame, blocking; returns 0 at end of stream. */
static int read_frame(reader_t *r, frame_t *f) {
  for (;;) {
    size_t have = r->end - r->start;
    if (have >= HEADER) {
      uint8_t *h = r->buf + r->start;
      if (h[0] != 'I' || h[1] != 'B' || h[2] != 1 || h[3] != 0) fail("bad frame header");
      uint32_t length = get_u32(h + 8);
      if (length > 64u * 1024 * 1024) fail("frame too large");
      size_t total = HEADER + (size_t)length;
      if (have >= total) {
        f->type = get_u32(h + 4);
        f->length = length;
        f->frame = h;
        r->start += total;
        if (r->start == r->end) r->start = r->end = 0;
        return 1;
      }
      if (total > r->cap) {
        size_t cap = r->cap;
        while (cap < total) cap *= 2;
        uint8_t *grown = malloc(cap);
        if (!grown) fail("out of memory");
        memcpy(grown, r->buf + r->start, have);
        free(r->buf);
        r->buf = grown;
        r->cap = cap;
        r->start = 0;
        r->end = have;
      } else if (r->start + total > r->cap) {
        memmove(r->buf, r->buf + r->start, have);
        r->start = 0;
        r->end = have;
      }
    } else if (r->end == r->cap) {
      memmove(r->buf, r->buf + r->start, have);
      r->start = 0;
      r->end = have;
    }
    ssize_t n = read(r->fd, r->buf + r->end, r->cap - r->end);
    if (n < 0 && errno == EAGAIN) {
      double deadline = now_us() + spin_us;
      do n = read(r->fd, r->buf + r->end, r->cap - r->end);
      while (n < 0 && errno == EAGAIN && now_us() < deadline);
      if (n < 0 && errno == EAGAIN) {
        wait_fd(r->fd, POLLIN);
        continue;
      }
    }
    if (n > 0) {
      r->end += (size_t)n;
    } else if (n == 0) {
      if (r->end != r->start) fail("stream ended inside a frame");
      return 0;
    } else if (errno != EINTR) {
      die("read");
    }
  }
}

/* ---- the child: echo and count ----------------------------------------- */

static void serve(int in, int out) {
  set_mode(in);
  set_mode(out);
  reader_t r;
  reader_init(&r, in);
  frame_t f;
  uint32_t target = 0, count = 0;
  while (read_frame(&r, &f)) {
    switch (f.type) {
    case T_ECHO: {
      struct iovec iov = {f.frame, HEADER + (size_t)f.length};
      write_all(out, &iov, 1);
      break;
    }
    case T_BEGIN:
      if (f.length < 4) fail("short begin frame");
      target = get_u32(f.frame + HEADER);
      count = 0;
      break;
    case T_DATA:
      if (++count == target) {
        uint8_t payload[4];
        put_u32(payload, count);
        send_frame(out, T_DONE, payload, 4);
      }
      break;
    default:
      fail("unexpected frame type");
    }
  }
}

/* ---- the parent: measure ----------------------------------------------- */

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Nearest rank, the same definition as bench/_stats.ts. */
static double percentile(const double *sorted, size_t n, double q) {
  size_t rank = (size_t)(q * (double)n + 0.999999999);
  if (rank < 1) rank = 1;
  if (rank > n) rank = n;
  return sorted[rank - 1];
}

/* Round trips until `count`, or until `seconds` (> 0) have passed after at least 1000. */
static size_t round_trips(int out, reader_t *in, const uint8_t *payload, uint32_t size, size_t count,
                          double seconds, double *samples) {
  frame_t f;
  double start = now_us();
  size_t i = 0;
  while (i < count) {
    double t0 = now_us();
    send_frame(out, T_ECHO, payload, size);
    if (!read_frame(in, &f)) fail("child closed the stream");
    double t1 = now_us();
    if (f.type != T_ECHO || f.length != size) fail("bad echo");
    if (samples) samples[i] = t1 - t0;
    i++;
    if (seconds > 0 && i >= 1000 && t1 - start >= seconds * 1e6) break;
  }
  return i;
}

static double throughput(int out, reader_t *in, const uint8_t *payload, uint32_t size, size_t count) {
  uint8_t begin[4];
  put_u32(begin, (uint32_t)count);
  send_frame(out, T_BEGIN, begin, 4);
  uint8_t header[HEADER];
  make_header(header, T_DATA, size);
  double t0 = now_us();
  for (size_t i = 0; i < count; i++) {
    struct iovec iov[2] = {{header, HEADER}, {(void *)payload, size}};
    write_all(out, iov, size > 0 ? 2 : 1);
  }
  frame_t f;
  if (!read_frame(in, &f)) fail("child closed the stream");
  double t1 = now_us();
  if (f.type != T_DONE || get_u32(f.frame + HEADER) != count) fail("bad done frame");
  return (t1 - t0) / 1e6;
}

static void measure(int out, int in_fd, int rt, uint32_t size, size_t count, int reps, double seconds) {
  set_mode(out);
  set_mode(in_fd);
  reader_t in;
  reader_init(&in, in_fd);
  uint8_t *payload = malloc(size ? size : 1);
  if (!payload) fail("out of memory");
  for (uint32_t i = 0; i < size; i++) payload[i] = (uint8_t)(i * 31 + 7);
  if (rt) {
    double *samples = malloc(sizeof(double) * count);
    if (!samples) fail("out of memory");
    round_trips(out, &in, payload, size, count < 2000 ? count : 2000, 0, NULL); /* warm-up */
    for (int r = 0; r < reps; r++) {
      size_t n = round_trips(out, &in, payload, size, count, seconds, samples);
      double sum = 0;
      for (size_t i = 0; i < n; i++) sum += samples[i];
      qsort(samples, n, sizeof(double), compare);
      printf("{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"n\":%zu}\n", percentile(samples, n, 0.5),
             percentile(samples, n, 0.99), sum / (double)n, n);
      fflush(stdout);
    }
    free(samples);
  } else {
    throughput(out, &in, payload, size, count / 10 > 0 ? count / 10 : 1); /* warm-up */
    for (int r = 0; r < reps; r++) {
      double seconds = throughput(out, &in, payload, size, count);
      printf("{\"seconds\":%.9f,\"count\":%zu}\n", seconds, count);
      fflush(stdout);
    }
  }
  free(payload);
  free(in.buf);
}

int main(int argc, char **argv) {
  if (argc < 7) {
    fprintf(stderr, "usage: ipcbench pipe|fifo rt|tp SIZE COUNT REPS SECONDS [FIFO_DIR]\n");
    return 2;
  }
  int fifo = strcmp(argv[1], "fifo") == 0;
  if (!fifo && strcmp(argv[1], "pipe") != 0) fail("mechanism must be pipe or fifo");
  int rt = strcmp(argv[2], "rt") == 0;
  if (!rt && strcmp(argv[2], "tp") != 0) fail("mode must be rt or tp");
  uint32_t size = (uint32_t)strtoul(argv[3], NULL, 10);
  size_t count = (size_t)strtoull(argv[4], NULL, 10);
  int reps = atoi(argv[5]);
  double seconds = strtod(argv[6], NULL);
  if (count == 0 || reps <= 0) fail("COUNT and REPS must be positive");
  if (fifo && argc < 8) fail("fifo needs FIFO_DIR");
  signal(SIGPIPE, SIG_IGN);
  const char *spin = getenv("IPCBENCH_SPIN_US");
  if (spin) spin_us = strtod(spin, NULL);

  /* Parent -> child on `down`, child -> parent on `up`. */
  int down[2], up[2]; /* [0] read end, [1] write end */
  char down_path[4096], up_path[4096];
  if (fifo) {
    snprintf(down_path, sizeof down_path, "%s/c-down-%d.fifo", argv[7], (int)getpid());
    snprintf(up_path, sizeof up_path, "%s/c-up-%d.fifo", argv[7], (int)getpid());
    if (mkfifo(down_path, 0600) != 0) die("mkfifo");
    if (mkfifo(up_path, 0600) != 0) {
      unlink(down_path);
      die("mkfifo");
    }
  } else {
    if (pipe2(down, O_CLOEXEC) != 0 || pipe2(up, O_CLOEXEC) != 0) die("pipe2");
  }

  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the parent */
    int in, out;
    if (fifo) {
      /* Same opening order as the parent (down, then up): no deadlock. */
      if ((in = open(down_path, O_RDONLY | O_CLOEXEC)) < 0) die("open down");
      if ((out = open(up_path, O_WRONLY | O_CLOEXEC)) < 0) die("open up");
    } else {
      close(down[1]);
      close(up[0]);
      in = down[0];
      out = up[1];
    }
    serve(in, out);
    _exit(0);
  }

  int out, in;
  if (fifo) {
    if ((out = open(down_path, O_WRONLY | O_CLOEXEC)) < 0) die("open down");
    if ((in = open(up_path, O_RDONLY | O_CLOEXEC)) < 0) die("open up");
    /* Both ends are open on both sides: the names are no longer needed. */
    unlink(down_path);
    unlink(up_path);
  } else {
    close(down[0]);
    close(up[1]);
    out = down[1];
    in = up[0];
  }
  measure(out, in, rt, size, count, reps, seconds);
  close(out);
  close(in);
  int status;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : 1;
}
