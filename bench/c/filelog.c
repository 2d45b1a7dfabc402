// The C baseline for `file:` logs: the same appends as ipcbus's MappedFileLog
// (same frames, same XXH32 checksums, same fcntl open-file-description append
// lock, same header updates and doorbell), on a log file that ipcbus created.
// Also a reader that replays and checks every frame. Format: docs/file-log.md.
//
// Usage:
//   filelog append <path> <count> <size> <batch> <reps> [none|sync]
//       appends <count> messages of <size> bytes, <batch> per lock acquisition,
//       <reps> times; prints one JSON line per repetition: {"seconds":s,"count":n}
//   filelog replay <path> <reps>
//       reads every retained message, checking it; prints {"seconds":s,"count":n,"bytes":b}
//   filelog write <path> <count> <size> <type>
//       appends <count> messages whose payload bytes are (seq + i) & 0xff, one lock each
//       (an interoperability check: ipcbus reads them back)
//
// Build: cc -O2 -o filelog filelog.c
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#define RING_OFFSET 12288
#define FRAME_HEADER 24
#define H_VERSION 8
#define H_CAPACITY 16
#define H_MAX_MESSAGE 24
#define H_WRITE 64
#define H_HEAD 72
#define H_NEXT_SEQ 80
#define H_DIRTY 96
#define H_SAVED_WRITE 104
#define H_SAVED_SEQ 112
#define H_WAITERS 192
#define H_DOORBELL 196
#define LOCK_APPEND 0
#define LOCK_USERS 1

static uint8_t *map;
static uint64_t capacity;
static uint32_t max_message;
static int fd;

static void die(const char *what) {
  fprintf(stderr, "filelog: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec / 1e9;
}

#define U32(off) (*(volatile uint32_t *)(map + (off)))
#define U64(off) (*(volatile uint64_t *)(map + (off)))

static inline uint32_t rotl(uint32_t x, int r) { return (x << r) | (x >> (32 - r)); }

// XXH32, seed 0 (the reference algorithm), over little-endian words.
static uint32_t xxh32(const uint8_t *p, size_t len) {
  const uint32_t P1 = 2654435761U, P2 = 2246822519U, P3 = 3266489917U, P4 = 668265263U, P5 = 374761393U;
  const uint8_t *end = p + len;
  uint32_t h;
  if (len >= 16) {
    uint32_t v1 = P1 + P2, v2 = P2, v3 = 0, v4 = -P1;
    const uint8_t *limit = end - 16;
    do {
      uint32_t w[4];
      memcpy(w, p, 16);
      v1 = rotl(v1 + w[0] * P2, 13) * P1;
      v2 = rotl(v2 + w[1] * P2, 13) * P1;
      v3 = rotl(v3 + w[2] * P2, 13) * P1;
      v4 = rotl(v4 + w[3] * P2, 13) * P1;
      p += 16;
    } while (p <= limit);
    h = rotl(v1, 1) + rotl(v2, 7) + rotl(v3, 12) + rotl(v4, 18);
  } else {
    h = P5;
  }
  h += (uint32_t)len;
  while (p + 4 <= end) {
    uint32_t w;
    memcpy(&w, p, 4);
    h = rotl(h + w * P3, 17) * P4;
    p += 4;
  }
  while (p < end) {
    h = rotl(h + (*p) * P5, 11) * P1;
    p++;
  }
  h ^= h >> 15;
  h *= P2;
  h ^= h >> 13;
  h *= P3;
  h ^= h >> 16;
  return h;
}

static int lock_byte(int type, int start, int wait) {
  struct flock l = {0};
  l.l_type = type;
  l.l_whence = SEEK_SET;
  l.l_start = start;
  l.l_len = 1;
  for (;;) {
    if (fcntl(fd, wait ? F_OFD_SETLKW : F_OFD_SETLK, &l) == 0) return 1;
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EACCES)) return 0;
    die("fcntl(F_OFD_SETLK)");
  }
}

static void open_log(const char *path) {
  fd = open(path, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) die(path);
  struct stat st;
  if (fstat(fd, &st) != 0) die("fstat");
  if (st.st_size < RING_OFFSET) {
    fprintf(stderr, "filelog: %s is not a log\n", path);
    exit(1);
  }
  uint8_t head[RING_OFFSET];
  if (pread(fd, head, sizeof head, 0) != (ssize_t)sizeof head) die("pread");
  if (memcmp(head, "IPCBUSLG", 8) != 0 || *(uint32_t *)(head + H_VERSION) != 1) {
    fprintf(stderr, "filelog: %s is not a version 1 ipcbus log\n", path);
    exit(1);
  }
  capacity = *(uint64_t *)(head + H_CAPACITY);
  max_message = *(uint32_t *)(head + H_MAX_MESSAGE);
  if ((uint64_t)st.st_size < RING_OFFSET + capacity) {
    fprintf(stderr, "filelog: %s is shorter than its header says\n", path);
    exit(1);
  }
  map = mmap(NULL, RING_OFFSET + capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) die("mmap");
  lock_byte(F_RDLCK, LOCK_USERS, 1);  // a user of the log, like every ipcbus open
}

static uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

// Advances the head past the oldest frames until end - head fits the ring.
static uint64_t reclaim(uint64_t head, uint64_t end) {
  if (end - head <= capacity) return head;
  uint64_t next = head;
  while (end - next > capacity) {
    uint64_t phys = next % capacity, room = capacity - phys;
    if (room < FRAME_HEADER) {
      next += room;
      continue;
    }
    uint8_t *f = map + RING_OFFSET + phys;
    uint32_t length = *(uint32_t *)(f + 4), type = *(uint32_t *)(f + 8), tag = *(uint32_t *)(f + 12);
    if (tag != (uint32_t)(next / 8)) {
      next = end - capacity;
      break;
    }
    next += type == 0 ? room : align8(FRAME_HEADER + length);
  }
  __atomic_store_n((uint64_t *)(map + H_HEAD), next, __ATOMIC_SEQ_CST);
  return next;
}

static void put_frame(uint64_t at_phys, uint32_t length, uint32_t type, uint64_t pos, uint64_t seq,
                      const uint8_t *payload) {
  uint8_t *f = map + RING_OFFSET + at_phys;
  *(uint32_t *)(f + 4) = length;
  *(uint32_t *)(f + 8) = type;
  *(uint32_t *)(f + 12) = (uint32_t)(pos / 8);
  *(uint64_t *)(f + 16) = seq;
  if (type != 0 && length > 0) memcpy(f + FRAME_HEADER, payload, length);
  *(uint32_t *)f = xxh32(f + 4, FRAME_HEADER - 4 + (type == 0 ? 0 : length));
}

// Appends `count` frames (holding the append lock), as MappedFileLog.#append does.
static void append(const uint8_t *const *payloads, uint32_t size, int count, uint32_t type) {
  if (U32(H_DIRTY) != 0) {
    fprintf(stderr, "filelog: a writer died inside its critical section; open the log with ipcbus to repair\n");
    exit(1);
  }
  uint64_t write = U64(H_WRITE), seq = U64(H_NEXT_SEQ), head = U64(H_HEAD);
  U64(H_SAVED_WRITE) = write;
  U64(H_SAVED_SEQ) = seq;
  __atomic_store_n((uint32_t *)(map + H_DIRTY), 1, __ATOMIC_SEQ_CST);
  uint64_t frame = align8(FRAME_HEADER + size);
  for (int i = 0; i < count; i++) {
    uint64_t phys = write % capacity, room = capacity - phys;
    if (room < frame) {
      head = reclaim(head, write + room + frame);
      if (room >= FRAME_HEADER) put_frame(phys, (uint32_t)(room - FRAME_HEADER), 0, write, seq, NULL);
      write += room;
      phys = 0;
    } else {
      head = reclaim(head, write + frame);
    }
    put_frame(phys, size, type, write, seq, payloads[i]);
    write += frame;
    seq++;
  }
  __atomic_store_n((uint64_t *)(map + H_WRITE), write, __ATOMIC_SEQ_CST);  // the commit point
  U64(H_NEXT_SEQ) = seq;
  __atomic_store_n((uint32_t *)(map + H_DIRTY), 0, __ATOMIC_SEQ_CST);
}

static void ring_doorbell(void) {
  if (__atomic_load_n((int32_t *)(map + H_WAITERS), __ATOMIC_SEQ_CST) != 0) {
    __atomic_fetch_add((uint32_t *)(map + H_DOORBELL), 1, __ATOMIC_SEQ_CST);
    syscall(SYS_futex, map + H_DOORBELL, FUTEX_WAKE, 0x7fffffff, NULL, NULL, 0);
  }
}

static void sync_range(uint64_t from, uint64_t to) {
  long page = sysconf(_SC_PAGESIZE);
  if (msync(map, RING_OFFSET, MS_SYNC) != 0) die("msync");
  if (to - from >= capacity) {
    if (msync(map + RING_OFFSET, capacity, MS_SYNC) != 0) die("msync");
    return;
  }
  uint64_t a = from % capacity, b = to % capacity;
  uint64_t ranges[2][2] = {{a, a < b ? b : capacity}, {0, a < b ? 0 : b}};
  for (int r = 0; r < 2; r++) {
    if (ranges[r][1] <= ranges[r][0]) continue;
    uint64_t start = ranges[r][0] - ranges[r][0] % page;
    if (msync(map + RING_OFFSET + start, ranges[r][1] - start, MS_SYNC) != 0) die("msync");
  }
}

static int cmd_append(const char *path, long count, int size, int batch, int reps, int sync) {
  open_log(path);
  if ((uint32_t)size > max_message) {
    fprintf(stderr, "filelog: %d bytes is over the log's limit of %u\n", size, max_message);
    return 1;
  }
  uint8_t *payload = calloc(1, size ? size : 1);
  const uint8_t **list = malloc(sizeof *list * batch);
  for (int i = 0; i < batch; i++) list[i] = payload;
  for (int r = 0; r < reps; r++) {
    double t = now();
    for (long done = 0; done < count;) {
      int n = count - done < batch ? (int)(count - done) : batch;
      payload[0] = (uint8_t)done;
      lock_byte(F_WRLCK, LOCK_APPEND, 1);
      uint64_t before = U64(H_WRITE);
      append(list, size, n, 1);
      uint64_t after = U64(H_WRITE);
      lock_byte(F_UNLCK, LOCK_APPEND, 0);
      ring_doorbell();
      if (sync) sync_range(before, after);
      done += n;
    }
    printf("{\"seconds\":%.9f,\"count\":%ld}\n", now() - t, count);
    fflush(stdout);
  }
  return 0;
}

static int cmd_write(const char *path, long count, int size, uint32_t type) {
  open_log(path);
  uint8_t *payload = malloc(size ? size : 1);
  for (long i = 0; i < count; i++) {
    lock_byte(F_WRLCK, LOCK_APPEND, 1);
    uint64_t seq = U64(H_NEXT_SEQ);
    for (int b = 0; b < size; b++) payload[b] = (uint8_t)(seq + b);
    const uint8_t *list[1] = {payload};
    append(list, size, 1, type);
    lock_byte(F_UNLCK, LOCK_APPEND, 0);
    ring_doorbell();
  }
  printf("{\"count\":%ld}\n", count);
  return 0;
}

static int cmd_replay(const char *path, int reps) {
  open_log(path);
  uint8_t *copy = malloc(FRAME_HEADER + (size_t)max_message);
  for (int r = 0; r < reps; r++) {
    double t = now();
    uint64_t write = __atomic_load_n((uint64_t *)(map + H_WRITE), __ATOMIC_ACQUIRE);
    uint64_t pos = __atomic_load_n((uint64_t *)(map + H_HEAD), __ATOMIC_ACQUIRE);
    long count = 0;
    uint64_t bytes = 0;
    while (pos < write) {
      uint64_t phys = pos % capacity, room = capacity - phys;
      if (room < FRAME_HEADER) {
        pos += room;
        continue;
      }
      uint8_t *f = map + RING_OFFSET + phys;
      uint32_t length = *(uint32_t *)(f + 4), type = *(uint32_t *)(f + 8);
      if (type == 0) {
        pos += room;
        continue;
      }
      if (length > max_message || FRAME_HEADER + (uint64_t)length > room) {
        fprintf(stderr, "filelog: bad frame at %llu\n", (unsigned long long)pos);
        return 1;
      }
      memcpy(copy, f, FRAME_HEADER + length);  // check the copy, as ipcbus does
      if (*(uint32_t *)copy != xxh32(copy + 4, FRAME_HEADER - 4 + length) ||
          *(uint32_t *)(copy + 12) != (uint32_t)(pos / 8)) {
        fprintf(stderr, "filelog: corrupt frame at %llu\n", (unsigned long long)pos);
        return 1;
      }
      count++;
      bytes += length;
      pos += align8(FRAME_HEADER + length);
    }
    printf("{\"seconds\":%.9f,\"count\":%ld,\"bytes\":%llu}\n", now() - t, count, (unsigned long long)bytes);
    fflush(stdout);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc >= 8 && strcmp(argv[1], "append") == 0) {
    return cmd_append(argv[2], atol(argv[3]), atoi(argv[4]), atoi(argv[5]), atoi(argv[6]),
                      strcmp(argv[7], "sync") == 0);
  }
  if (argc >= 4 && strcmp(argv[1], "replay") == 0) return cmd_replay(argv[2], atoi(argv[3]));
  if (argc >= 6 && strcmp(argv[1], "write") == 0) {
    return cmd_write(argv[2], atol(argv[3]), atoi(argv[4]), (uint32_t)atol(argv[5]));
  }
  fprintf(stderr,
          "usage: filelog append <path> <count> <size> <batch> <reps> none|sync\n"
          "       filelog replay <path> <reps>\n"
          "       filelog write <path> <count> <size> <type>\n");
  return 2;
}
