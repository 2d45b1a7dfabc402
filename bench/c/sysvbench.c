/*
 * sysvbench: the C baseline for ipcbus's `sysv-mq:` transport (built and run
 * by bench/bench.ts like ipcbench.c).
 *
 * One private System V message queue between a parent and a forked child,
 * the classic way: the payload is the whole mtext (no header), the mtype
 * says what a message is.
 *   parent -> child: 1 echo this back, 2 begin (payload: u32 count), 3 data
 *   child -> parent: 5 echo reply, 4 done
 * The child takes "type <= 3" (msgrcv type -3), the parent takes exactly the
 * type it waits for. Blocking msgsnd/msgrcv; with IPCBENCH_SPIN_US > 0 a
 * receive first retries with IPC_NOWAIT for that long (ipcbus's strategy).
 *
 * Usage: sysvbench sysv rt|tp SIZE COUNT REPS SECONDS [DIR]   (as ipcbench; DIR unused)
 *   rt: up to COUNT timed round trips per repetition, stopping after SECONDS
 *       (when > 0) once 1000 are done; prints {"p50":µs,"p99":µs,"mean":µs,"n":done}
 *   tp: COUNT one-way messages per repetition, timed from the first send
 *       until "done" arrives; prints {"seconds":s,"count":COUNT}
 * The queue is removed on exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define T_ECHO 1
#define T_BEGIN 2
#define T_DATA 3
#define T_DONE 4
#define T_REPLY 5

struct message {
  long mtype;
  uint8_t mtext[65536];
};

static int qid = -1;
static double spin_us = 0;

static void die(const char *what) {
  fprintf(stderr, "sysvbench: %s: %s\n", what, strerror(errno));
  if (qid >= 0) msgctl(qid, IPC_RMID, NULL);
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static void put(struct message *m, long type, size_t size) {
  m->mtype = type;
  while (msgsnd(qid, m, size, 0) < 0)
    if (errno != EINTR) die("msgsnd");
}

static size_t take(struct message *m, long type) {
  if (spin_us > 0) {
    double deadline = now_us() + spin_us;
    do {
      ssize_t n = msgrcv(qid, m, sizeof m->mtext, type, IPC_NOWAIT);
      if (n >= 0) return (size_t)n;
      if (errno != ENOMSG && errno != EINTR) die("msgrcv");
    } while (now_us() < deadline);
  }
  for (;;) {
    ssize_t n = msgrcv(qid, m, sizeof m->mtext, type, 0);
    if (n >= 0) return (size_t)n;
    if (errno != EINTR) die("msgrcv");
  }
}

static void serve(void) {
  static struct message m;
  for (;;) {
    size_t n = take(&m, -T_DATA);
    if (m.mtype == T_ECHO) {
      put(&m, T_REPLY, n);
    } else if (m.mtype == T_BEGIN) {
      uint32_t count;
      memcpy(&count, m.mtext, 4);
      for (uint32_t i = 0; i < count; i++) take(&m, T_DATA);
      put(&m, T_DONE, 0);
    }
  }
}

static int compare(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if ((argc != 7 && argc != 8) || strcmp(argv[1], "sysv") != 0) {
    fprintf(stderr, "usage: sysvbench sysv rt|tp SIZE COUNT REPS SECONDS [DIR]\n");
    return 2;
  }
  int rt = strcmp(argv[2], "rt") == 0;
  size_t size = strtoul(argv[3], NULL, 10), count = strtoul(argv[4], NULL, 10);
  int reps = atoi(argv[5]);
  double seconds = atof(argv[6]);
  const char *spin = getenv("IPCBENCH_SPIN_US");
  if (spin) spin_us = atof(spin);
  if (size > sizeof(((struct message *)0)->mtext)) {
    fprintf(stderr, "sysvbench: SIZE too large\n");
    return 2;
  }
  qid = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
  if (qid < 0) die("msgget");
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    serve();
  }
  static struct message m;
  memset(m.mtext, 7, size);
  double *samples = malloc(sizeof(double) * (count ? count : 1));
  for (int w = 0; w < 200; w++) {  // warm-up
    put(&m, T_ECHO, size);
    take(&m, T_REPLY);
  }
  for (int r = 0; r < reps; r++) {
    if (rt) {
      size_t done = 0;
      double start = now_us();
      while (done < count) {
        double t0 = now_us();
        put(&m, T_ECHO, size);
        take(&m, T_REPLY);
        samples[done++] = now_us() - t0;
        if (seconds > 0 && done >= 1000 && now_us() - start > seconds * 1e6) break;
      }
      double sum = 0;
      for (size_t i = 0; i < done; i++) sum += samples[i];
      qsort(samples, done, sizeof(double), compare);
      printf("{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"n\":%zu}\n", samples[done / 2],
             samples[(size_t)((double)done * 0.99)], sum / (double)done, done);
    } else {
      uint32_t n = (uint32_t)count;
      double t0 = now_us();
      memcpy(m.mtext, &n, 4);
      put(&m, T_BEGIN, size > 4 ? size : 4);
      memset(m.mtext, 7, size);
      for (size_t i = 0; i < count; i++) put(&m, T_DATA, size);
      take(&m, T_DONE);
      printf("{\"seconds\":%.6f,\"count\":%zu}\n", (now_us() - t0) / 1e6, count);
    }
    fflush(stdout);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  msgctl(qid, IPC_RMID, NULL);
  return 0;
}
