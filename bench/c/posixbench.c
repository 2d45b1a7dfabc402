/*
 * posixbench: the C baseline for ipcbus's `posix-mq:` transport (built and
 * run by bench/bench.ts like ipcbench.c).
 *
 * Two POSIX message queues between a parent and a forked child, the classic
 * way: "down" (parent -> child) and "up" (child -> parent), created with the
 * system's default sizes (like the ipcbus rows) and unlinked at once (the
 * descriptors, inherited by the child, keep them alive; nothing is left
 * behind even if the program is killed). The payload is the whole message;
 * a POSIX queue has no type, so the message's priority says what it is (the
 * same mapping as bench/_frames.ts):
 *   parent -> child: 1 echo this back, 2 begin (payload: u32 count), 0 data
 *   child -> parent: 1 echo reply, 3 done
 * "begin" outranks "data", so it is taken first although both are queued.
 * Blocking mq_send/mq_receive; with IPCBENCH_SPIN_US > 0 the descriptors are
 * non-blocking instead and a call that finds the queue empty (or full) retries
 * for that long before parking in poll(2): ipcbus's strategy.
 *
 * Usage: posixbench posix rt|tp SIZE COUNT REPS SECONDS [DIR]   (as ipcbench; DIR unused)
 *   rt: up to COUNT timed round trips per repetition, stopping after SECONDS
 *       (when > 0) once 1000 are done; prints {"p50":µs,"p99":µs,"mean":µs,"n":done}
 *   tp: COUNT one-way messages per repetition, timed from the first send
 *       until "done" arrives; prints {"seconds":s,"count":COUNT}
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define P_DATA 0
#define P_ECHO 1
#define P_BEGIN 2
#define P_DONE 3

static double spin_us = 0;
static long msgsize = 0;

static void die(const char *what) {
  fprintf(stderr, "posixbench: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void wait_fd(mqd_t q, short events) {
  struct pollfd p = {(int)q, events, 0};
  while (poll(&p, 1, -1) < 0)
    if (errno != EINTR) die("poll");
}

static void put(mqd_t q, const char *data, size_t size, unsigned priority) {
  for (;;) {
    if (mq_send(q, data, size, priority) == 0) return;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) die("mq_send");
    double deadline = now_us() + spin_us;
    int sent = 0;
    while (!sent && now_us() < deadline) {
      if (mq_send(q, data, size, priority) == 0) sent = 1;
      else if (errno != EAGAIN && errno != EINTR) die("mq_send");
    }
    if (sent) return;
    wait_fd(q, POLLOUT);
  }
}

static size_t take(mqd_t q, char *buffer, unsigned *priority) {
  for (;;) {
    ssize_t n = mq_receive(q, buffer, (size_t)msgsize, priority);
    if (n >= 0) return (size_t)n;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) die("mq_receive");
    double deadline = now_us() + spin_us;
    while (now_us() < deadline) {
      n = mq_receive(q, buffer, (size_t)msgsize, priority);
      if (n >= 0) return (size_t)n;
      if (errno != EAGAIN && errno != EINTR) die("mq_receive");
    }
    wait_fd(q, POLLIN);
  }
}

static void serve(mqd_t in, mqd_t out) {
  char *buffer = malloc((size_t)msgsize);
  if (!buffer) die("malloc");
  uint32_t target = 0, count = 0;
  for (;;) {
    unsigned priority;
    size_t n = take(in, buffer, &priority);
    if (priority == P_ECHO) {
      put(out, buffer, n, P_ECHO);
    } else if (priority == P_BEGIN) {
      memcpy(&target, buffer, 4);
      count = 0;
    } else if (priority == P_DATA) {
      if (++count == target) put(out, (const char *)&count, 4, P_DONE);
    }
  }
}

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

static mqd_t make(const char *name, int flags) {
  mqd_t q = mq_open(name, O_RDWR | O_CREAT | O_EXCL | flags, 0600, NULL);
  if (q == (mqd_t)-1) die("mq_open");
  mq_unlink(name);
  return q;
}

int main(int argc, char **argv) {
  if ((argc != 7 && argc != 8) || strcmp(argv[1], "posix") != 0) {
    fprintf(stderr, "usage: posixbench posix rt|tp SIZE COUNT REPS SECONDS [DIR]\n");
    return 2;
  }
  int rt = strcmp(argv[2], "rt") == 0;
  size_t size = strtoul(argv[3], NULL, 10), count = strtoul(argv[4], NULL, 10);
  int reps = atoi(argv[5]);
  double seconds = atof(argv[6]);
  const char *spin = getenv("IPCBENCH_SPIN_US");
  if (spin) spin_us = atof(spin);
  int flags = spin_us > 0 ? O_NONBLOCK : 0;
  char name[64];
  snprintf(name, sizeof name, "/ipcbench-%d-down", (int)getpid());
  mqd_t down = make(name, flags);
  snprintf(name, sizeof name, "/ipcbench-%d-up", (int)getpid());
  mqd_t up = make(name, flags);
  struct mq_attr attr;
  if (mq_getattr(down, &attr) != 0) die("mq_getattr");
  msgsize = attr.mq_msgsize;
  if ((long)size > msgsize || msgsize < 4) {
    fprintf(stderr, "posixbench: SIZE %zu is over the queue's mq_msgsize %ld\n", size, msgsize);
    return 2;
  }
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    serve(down, up);
  }
  char *message = malloc((size_t)msgsize);
  if (!message) die("malloc");
  memset(message, 7, size);
  unsigned priority;
  double *samples = malloc(sizeof(double) * (count ? count : 1));
  for (int w = 0; w < 200; w++) {  // warm-up
    put(down, message, size, P_ECHO);
    take(up, message, &priority);
  }
  for (int r = 0; r < reps; r++) {
    if (rt) {
      size_t done = 0;
      double start = now_us();
      while (done < count) {
        double t0 = now_us();
        put(down, message, size, P_ECHO);
        take(up, message, &priority);
        samples[done++] = now_us() - t0;
        if (seconds > 0 && done >= 1000 && now_us() - start > seconds * 1e6) break;
      }
      double sum = 0;
      for (size_t i = 0; i < done; i++) sum += samples[i];
      qsort(samples, done, sizeof(double), compare);
      printf("{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"n\":%zu}\n", percentile(samples, done, 0.5),
             percentile(samples, done, 0.99), sum / (double)done, done);
    } else {
      uint32_t n = (uint32_t)count;
      double t0 = now_us();
      put(down, (const char *)&n, 4, P_BEGIN);
      memset(message, 7, size);
      for (size_t i = 0; i < count; i++) put(down, message, size, P_DATA);
      take(up, message, &priority);
      if (priority != P_DONE) {
        fprintf(stderr, "posixbench: expected done, got priority %u\n", priority);
        return 1;
      }
      printf("{\"seconds\":%.6f,\"count\":%zu}\n", (now_us() - t0) / 1e6, count);
    }
    fflush(stdout);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  return 0;
}
