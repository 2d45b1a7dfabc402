/*
 * shmring: ipcbus's shared-memory ring (docs/shm-ring.md, layout version 1)
 * in C: the benchmark baseline for the `shm:` transport, and a C peer that
 * speaks the ring with ipcbus (queue mode). Same frame layout, same writer
 * and reader locks, same wait masks and System V semaphores, same wait
 * strategy: try, spin for IPCBENCH_SPIN_US µs (0: none), then park on the
 * slot's semaphore (semtimedop, 100 ms slices).
 *
 * Usage:
 *   shmring rt SIZE COUNT REPS SECONDS
 *       Two rings (there and back) between this process and a forked child;
 *       up to COUNT timed round trips per repetition, stopping after SECONDS
 *       (when > 0) once 1000 are done; prints {"p50":µs,"p99":µs,"mean":µs,"n":done}.
 *   shmring tp SIZE COUNT REPS SECONDS [PRODUCERS]
 *       COUNT one-way messages per repetition, from PRODUCERS forked
 *       processes (default 1, each sending its share) to this one, timed from
 *       the start signal until the last arrives; prints {"seconds":s,"count":COUNT}.
 *   shmring produce NAME COUNT SIZE ID
 *       Opens the ipcbus ring NAME and sends COUNT self-checking test
 *       messages (tests/fixtures/shm_ring_message.ts) of SIZE extra bytes as
 *       producer ID, with type 3; prints "done".
 *   shmring consume NAME COUNT
 *       Opens the ring NAME, receives COUNT test messages, checks them, and
 *       prints "ok <count> <sum of seqs>" (or "bad ..." and exits 1).
 * The rings made by rt and tp are removed on exit.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/sem.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- layout (transports/_ring_layout.ts) ---------------------------------- */
#define H_VERSION 8
#define H_DATA_OFFSET 12
#define H_CAPACITY 16
#define H_MAX_MESSAGE 20
#define H_MODE 24
#define H_OVERFLOW 28
#define H_SLOTS 32
#define H_SLOT_TABLE 36
#define H_SLOT_SIZE 40
#define H_FLAGS 44
#define H_TOTAL_LO 48
#define H_TOTAL_HI 52
#define H_CREATOR 56
#define H_SEMID 60
#define W_LOCK 64
#define W_WRITE 68
#define W_SEQ_LO 72
#define W_SEQ_HI 76
#define W_LAST 80
#define W_TAIL 84
#define R_LOCK 128
#define R_READ 132
#define W_SPACE_WAITERS 192
#define R_DATA_WAITERS 196
#define DATA_MASK 256
#define SPACE_MASK 384
#define SUB_MASK 512
#define SLOT_TABLE 1024
#define SLOT_SIZE 64
#define S_STATE 32
#define S_PID 36
#define S_GEN 40
#define S_FLAGS 44
#define S_CURSOR 48
#define FRAME_HEADER 16
#define PAD_TYPE 0
#define REMOVED 1
#define GEN_MASK 0x1fffff
#define TOKEN_SLOT_BITS 11
#define VERSION 1
static const char MAGIC[8] = {'I', 'P', 'C', 'B', 'R', 'I', 'N', 'G'};

#define HOLDER_CHECK_US 10000.0
#define PARK_MS 100

typedef struct {
  uint8_t *m;
  size_t size;
  int fd;
  uint32_t base, cap, mask, max, slots, semid;
  int slot;
  int32_t token;
  uint32_t limit, write_cache;
  uint32_t seen_holder[2];
  double seen_since[2];
} ring_t;

static double spin_us = 0;
/* Rings this process created (removed on exit; a forked child forgets them). */
static char made_names[2][64];
static int made_semids[2] = {-1, -1};
static int made = 0;

static void cleanup(void) {
  for (int i = 0; i < made; i++) {
    shm_unlink(made_names[i]);
    semctl(made_semids[i], 0, IPC_RMID);
  }
  made = 0;
}

static void die(const char *what) {
  fprintf(stderr, "shmring: %s: %s\n", what, strerror(errno));
  cleanup();
  exit(1);
}

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static inline uint32_t *U32(ring_t *r, size_t offset) { return (uint32_t *)(r->m + offset); }
static inline uint32_t load(uint32_t *p) { return __atomic_load_n(p, __ATOMIC_SEQ_CST); }
static inline void store(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_SEQ_CST); }
static inline uint32_t frame_size(uint32_t length) { return FRAME_HEADER + ((length + 15u) & ~15u); }

/* ---- locks and liveness -------------------------------------------------------- */

static int lock_byte(int fd, off_t start, int type, int cmd) {
  struct flock fl = {0};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = 1;
  for (;;) {
    if (fcntl(fd, cmd, &fl) == 0) return cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 1;
    if (errno != EINTR) return 0;
  }
}

static int holder_gone(ring_t *r, uint32_t token) {
  uint32_t slot_plus = token & ((1u << TOKEN_SLOT_BITS) - 1);
  if (slot_plus == 0 || slot_plus > r->slots) return 1;
  uint32_t slot = slot_plus - 1;
  if ((int)slot == r->slot) return 1;
  uint32_t gen = (token >> TOKEN_SLOT_BITS) & GEN_MASK;
  if ((load(U32(r, SLOT_TABLE + slot * SLOT_SIZE + S_GEN)) & GEN_MASK) != gen) return 1;
  return !lock_byte(r->fd, SLOT_TABLE + slot * SLOT_SIZE, F_WRLCK, F_OFD_GETLK);
}

/* Repairs the sequence counter after taking the writer lock from a dead holder. */
static void recover_writer(ring_t *r) {
  uint32_t w = *U32(r, W_WRITE), last = *U32(r, W_LAST);
  uint32_t distance = w - last;
  if (distance == 0 || distance > r->cap / 2) return;
  uint32_t *f = U32(r, r->base + (last & r->mask));
  if (f[1] == PAD_TYPE || f[0] > r->max || frame_size(f[0]) != distance) return;
  uint64_t next = (((uint64_t)f[3] << 32) | f[2]) + 1;
  uint64_t now = ((uint64_t)*U32(r, W_SEQ_HI) << 32) | *U32(r, W_SEQ_LO);
  if (next > now) {
    *U32(r, W_SEQ_LO) = (uint32_t)next;
    *U32(r, W_SEQ_HI) = (uint32_t)(next >> 32);
  }
}

/* Takes a lock word (spinning up to 20 µs); 0 when it stays busy. */
static int take_lock(ring_t *r, size_t offset) {
  uint32_t *word = U32(r, offset);
  double deadline = 0;
  for (int i = 0;; i++) {
    uint32_t expected = 0;
    if (__atomic_compare_exchange_n(word, &expected, (uint32_t)r->token, 0, __ATOMIC_SEQ_CST,
                                    __ATOMIC_SEQ_CST))
      return 1;
    if ((i & 15) != 15) continue;
    double t = now_us();
    if (deadline == 0) deadline = t + 20;
    if (t < deadline) continue;
    int which = offset == W_LOCK ? 0 : 1;
    if (r->seen_holder[which] != expected) {
      r->seen_holder[which] = expected;
      r->seen_since[which] = t;
      return 0;
    }
    if (t - r->seen_since[which] < HOLDER_CHECK_US) return 0;
    r->seen_since[which] = t;
    if (!holder_gone(r, expected)) return 0;
    if (!__atomic_compare_exchange_n(word, &expected, (uint32_t)r->token, 0, __ATOMIC_SEQ_CST,
                                     __ATOMIC_SEQ_CST))
      return 0;
    if (offset == W_LOCK) recover_writer(r);
    return 1;
  }
}

static void release_lock(ring_t *r, size_t offset) { store(U32(r, offset), 0); }

/* ---- waking and parking --------------------------------------------------------- */

static void post(ring_t *r, int slot) {
  struct sembuf op = {(unsigned short)slot, 1, IPC_NOWAIT};
  while (semop(r->semid, &op, 1) < 0 && errno == EINTR) {
  }
}

static void wake(ring_t *r, size_t mask, size_t counter, int all) {
  for (uint32_t word = 0; word < r->slots / 32; word++) {
    uint32_t *p = U32(r, mask + 4 * word);
    uint32_t bits = load(p);
    while (bits) {
      uint32_t low = bits & -bits;
      bits ^= low;
      uint32_t old = __atomic_fetch_and(p, ~low, __ATOMIC_SEQ_CST);
      if (!(old & low)) continue;
      __atomic_fetch_sub(U32(r, counter), 1, __ATOMIC_SEQ_CST);
      post(r, (int)(word * 32 + __builtin_ctz(low)));
      if (!all) return;
    }
  }
}

/* Registers in a wait mask, re-checks `ready`, parks for at most PARK_MS. */
static void park(ring_t *r, size_t mask, size_t counter, int (*ready)(ring_t *)) {
  uint32_t *word = U32(r, mask + 4 * (r->slot / 32));
  uint32_t bit = 1u << (r->slot % 32);
  __atomic_fetch_add(U32(r, counter), 1, __ATOMIC_SEQ_CST);
  __atomic_fetch_or(word, bit, __ATOMIC_SEQ_CST);
  if (!ready(r)) {
    struct sembuf op = {(unsigned short)r->slot, -1, 0};
    struct timespec slice = {0, PARK_MS * 1000000L};
    if (semtimedop(r->semid, &op, 1, &slice) < 0 && errno != EAGAIN && errno != EINTR) die("semtimedop");
  }
  if (__atomic_fetch_and(word, ~bit, __ATOMIC_SEQ_CST) & bit) __atomic_fetch_sub(U32(r, counter), 1, __ATOMIC_SEQ_CST);
}

/* ---- the ring ---------------------------------------------------------------------- */

static void geometry(ring_t *r) {
  r->base = *U32(r, H_DATA_OFFSET);
  r->cap = *U32(r, H_CAPACITY);
  r->mask = r->cap - 1;
  r->max = *U32(r, H_MAX_MESSAGE);
  r->slots = *U32(r, H_SLOTS);
  r->semid = *U32(r, H_SEMID);
}

static void claim_slot(ring_t *r) {
  for (uint32_t s = 0; s < r->slots; s++) {
    if (!lock_byte(r->fd, SLOT_TABLE + s * SLOT_SIZE, F_WRLCK, F_OFD_SETLK)) continue;
    uint32_t *gen = U32(r, SLOT_TABLE + s * SLOT_SIZE + S_GEN);
    uint32_t g = (load(gen) + 1) & GEN_MASK;
    if (g == 0) g = 1;
    store(gen, g);
    store(U32(r, SLOT_TABLE + s * SLOT_SIZE + S_PID), (uint32_t)getpid());
    store(U32(r, SLOT_TABLE + s * SLOT_SIZE + S_FLAGS), 0);
    store(U32(r, SLOT_TABLE + s * SLOT_SIZE + S_STATE), 1);
    uint32_t bit = 1u << (s % 32);
    __atomic_fetch_and(U32(r, SUB_MASK + 4 * (s / 32)), ~bit, __ATOMIC_SEQ_CST);
    if (__atomic_fetch_and(U32(r, DATA_MASK + 4 * (s / 32)), ~bit, __ATOMIC_SEQ_CST) & bit)
      __atomic_fetch_sub(U32(r, R_DATA_WAITERS), 1, __ATOMIC_SEQ_CST);
    if (__atomic_fetch_and(U32(r, SPACE_MASK + 4 * (s / 32)), ~bit, __ATOMIC_SEQ_CST) & bit)
      __atomic_fetch_sub(U32(r, W_SPACE_WAITERS), 1, __ATOMIC_SEQ_CST);
    semctl(r->semid, (int)s, SETVAL, 0);
    r->slot = (int)s;
    r->token = (int32_t)((g << TOKEN_SLOT_BITS) | (s + 1));
    return;
  }
  errno = EMFILE;
  die("every slot is taken");
}

static void ring_create(ring_t *r, const char *name, uint32_t capacity, uint32_t slots) {
  memset(r, 0, sizeof *r);
  uint32_t base = ((SLOT_TABLE + slots * SLOT_SIZE) + 4095u) & ~4095u;
  r->size = base + capacity;
  r->fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (r->fd < 0) die("shm_open");
  snprintf(made_names[made], sizeof made_names[made], "%s", name);
  made_semids[made++] = -1;
  if (ftruncate(r->fd, (off_t)r->size) < 0) die("ftruncate");
  r->m = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
  if (r->m == MAP_FAILED) die("mmap");
  int semid = semget(IPC_PRIVATE, (int)slots, IPC_CREAT | IPC_EXCL | 0600);
  if (semid < 0) die("semget");
  made_semids[made - 1] = semid;
  *U32(r, H_VERSION) = VERSION;
  *U32(r, H_DATA_OFFSET) = base;
  *U32(r, H_CAPACITY) = capacity;
  *U32(r, H_MAX_MESSAGE) = capacity / 2 - FRAME_HEADER;
  *U32(r, H_SLOTS) = slots;
  *U32(r, H_SLOT_TABLE) = SLOT_TABLE;
  *U32(r, H_SLOT_SIZE) = SLOT_SIZE;
  *U32(r, H_TOTAL_LO) = (uint32_t)r->size;
  *U32(r, H_TOTAL_HI) = (uint32_t)((uint64_t)r->size >> 32);
  *U32(r, H_CREATOR) = (uint32_t)getpid();
  *U32(r, H_SEMID) = (uint32_t)semid;
  memcpy(r->m + 4, MAGIC + 4, 4);
  uint32_t word0;
  memcpy(&word0, MAGIC, 4);
  store(U32(r, 0), word0);
  geometry(r);
  claim_slot(r);
}

static void ring_open(ring_t *r, const char *name) {
  memset(r, 0, sizeof *r);
  r->fd = shm_open(name, O_RDWR | O_CLOEXEC, 0);
  if (r->fd < 0) die("shm_open");
  struct stat st;
  if (fstat(r->fd, &st) < 0) die("fstat");
  r->size = (size_t)st.st_size;
  if (r->size < 8192) {
    errno = EINVAL;
    die("not a ring (too small)");
  }
  r->m = mmap(NULL, r->size, PROT_READ | PROT_WRITE, MAP_SHARED, r->fd, 0);
  if (r->m == MAP_FAILED) die("mmap");
  if (memcmp(r->m, MAGIC, 8) != 0 || *U32(r, H_VERSION) != VERSION) {
    errno = EINVAL;
    die("not an ipcbus ring of version 1");
  }
  geometry(r);
  uint64_t total = ((uint64_t)*U32(r, H_TOTAL_HI) << 32) | *U32(r, H_TOTAL_LO);
  if (total != r->size || r->base + (uint64_t)r->cap != r->size || (r->cap & r->mask) ||
      r->max > r->cap / 2 - FRAME_HEADER || r->slots % 32 || r->slots > 1024 ||
      *U32(r, H_MODE) != 0) {
    errno = EINVAL;
    die("bad ring header (or not a queue ring)");
  }
  claim_slot(r);
}

/* Whether `need` bytes from `w` are free (queue mode). */
static int room(ring_t *r, uint32_t w, uint32_t need) {
  uint32_t free_bytes = r->limit - w;
  if (free_bytes <= r->cap && free_bytes >= need) return 1;
  uint32_t rd = load(U32(r, R_READ));
  if (w - rd > r->cap) {
    errno = EINVAL;
    die("corrupt read position");
  }
  r->limit = rd + r->cap;
  return r->limit - w >= need;
}

/* Sends one frame without waiting: 1 sent, 0 full or busy. */
static int try_send(ring_t *r, const uint8_t *data, uint32_t length, uint32_t type) {
  if (!take_lock(r, W_LOCK)) return 0;
  if (*U32(r, H_FLAGS) & REMOVED) {
    release_lock(r, W_LOCK);
    errno = EIDRM;
    die("the ring was unlinked");
  }
  uint32_t w = *U32(r, W_WRITE), size = frame_size(length);
  uint32_t offset = w & r->mask, contiguous = r->cap - offset;
  uint32_t need = size <= contiguous ? size : contiguous + size;
  if (!room(r, w, need)) {
    release_lock(r, W_LOCK);
    return 0;
  }
  uint32_t lo = *U32(r, W_SEQ_LO), hi = *U32(r, W_SEQ_HI);
  if (size > contiguous) {
    uint32_t *pad = U32(r, r->base + offset);
    pad[0] = contiguous - FRAME_HEADER;
    pad[1] = PAD_TYPE;
    pad[2] = pad[3] = 0;
    w += contiguous;
    offset = 0;
  }
  uint32_t *f = U32(r, r->base + offset);
  f[0] = length;
  f[1] = type;
  f[2] = lo;
  f[3] = hi;
  memcpy(r->m + r->base + offset + FRAME_HEADER, data, length);
  *U32(r, W_LAST) = w;
  store(U32(r, W_WRITE), w + size);
  if (++lo == 0) hi++;
  *U32(r, W_SEQ_LO) = lo;
  *U32(r, W_SEQ_HI) = hi;
  release_lock(r, W_LOCK);
  if (load(U32(r, R_DATA_WAITERS))) wake(r, DATA_MASK, R_DATA_WAITERS, 0);
  return 1;
}

/* Takes one frame without waiting into `out`; returns its length, or -1. */
static long try_receive(ring_t *r, uint8_t *out, uint32_t *type) {
  uint32_t rd = load(U32(r, R_READ));
  if (rd == r->write_cache && rd == (r->write_cache = load(U32(r, W_WRITE)))) return -1;
  if (!take_lock(r, R_LOCK)) return -1;
  rd = *U32(r, R_READ);
  long result = -1;
  uint32_t avail = r->write_cache - rd;
  if (avail == 0 || avail > r->cap) {
    r->write_cache = load(U32(r, W_WRITE));
    avail = r->write_cache - rd;
  }
  if (avail > r->cap || (avail & 15)) {
    errno = EINVAL;
    die("corrupt write position");
  }
  while (avail) {
    uint32_t offset = rd & r->mask;
    uint32_t *f = U32(r, r->base + offset);
    uint32_t length = f[0], t = f[1];
    if (length > (t == PAD_TYPE ? r->cap : r->max) || frame_size(length) > avail ||
        offset + frame_size(length) > r->cap) {
      errno = EINVAL;
      die("corrupt frame");
    }
    rd += frame_size(length);
    avail -= frame_size(length);
    if (t == PAD_TYPE) continue;
    memcpy(out, r->m + r->base + offset + FRAME_HEADER, length);
    *type = t;
    result = length;
    break;
  }
  store(U32(r, R_READ), rd);
  release_lock(r, R_LOCK);
  if (load(U32(r, W_SPACE_WAITERS))) wake(r, SPACE_MASK, W_SPACE_WAITERS, 1);
  if (avail && load(U32(r, R_DATA_WAITERS))) wake(r, DATA_MASK, R_DATA_WAITERS, 0);
  return result;
}

static uint32_t waiting_size;
static int has_data(ring_t *r) { return load(U32(r, W_WRITE)) != load(U32(r, R_READ)); }
static int has_room(ring_t *r) {
  uint32_t w = load(U32(r, W_WRITE)), used = w - load(U32(r, R_READ));
  uint32_t size = frame_size(waiting_size), contiguous = r->cap - (w & r->mask);
  uint32_t need = size <= contiguous ? size : contiguous + size;
  return used > r->cap || r->cap - used >= need;
}

static void send_msg(ring_t *r, const uint8_t *data, uint32_t length, uint32_t type) {
  if (try_send(r, data, length, type)) return;
  waiting_size = length;
  if (spin_us > 0) {
    double end = now_us() + spin_us;
    do {
      if (has_room(r) && try_send(r, data, length, type)) return; /* as ipcbus: look, then lock */
    } while (now_us() < end);
  }
  while (!try_send(r, data, length, type)) park(r, SPACE_MASK, W_SPACE_WAITERS, has_room);
}

static uint32_t receive_msg(ring_t *r, uint8_t *out, uint32_t *type) {
  long n = try_receive(r, out, type);
  if (n >= 0) return (uint32_t)n;
  if (spin_us > 0) {
    double end = now_us() + spin_us;
    do {
      if ((n = try_receive(r, out, type)) >= 0) return (uint32_t)n;
    } while (now_us() < end);
  }
  while ((n = try_receive(r, out, type)) < 0) park(r, DATA_MASK, R_DATA_WAITERS, has_data);
  return (uint32_t)n;
}

/* ---- test messages (tests/fixtures/shm_ring_message.ts) ------------------------------- */

static void fill(uint8_t *bytes, uint32_t length, uint32_t producer, uint32_t seq) {
  uint32_t x = (uint32_t)((uint64_t)producer * 2654435761u + (uint64_t)seq * 40503u + length);
  if (x == 0) x = 1;
  for (uint32_t i = 12; i < length; i++) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    bytes[i] = (uint8_t)x;
  }
}

static uint32_t checksum(const uint8_t *bytes, uint32_t length) {
  uint32_t sum = length;
  for (uint32_t i = 12; i < length; i++) sum = sum * 31u + bytes[i];
  return sum;
}

/* ---- benchmark ------------------------------------------------------------------------ */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void on_exit_signal(int sig) {
  (void)sig;
  cleanup();
  _exit(1);
}

int main(int argc, char **argv) {
  const char *spin = getenv("IPCBENCH_SPIN_US");
  if (spin) spin_us = atof(spin);
  if (argc < 2) goto usage;
  static uint8_t buffer[1 << 20];
  static uint8_t payload[1 << 20];
  if (strcmp(argv[1], "produce") == 0 && argc == 6) {
    ring_t r;
    ring_open(&r, argv[2]);
    size_t count = strtoull(argv[3], NULL, 10);
    uint32_t extra = (uint32_t)atoi(argv[4]), id = (uint32_t)atoi(argv[5]), length = 12 + extra;
    if (length > r.max) {
      errno = EMSGSIZE;
      die("message too large for the ring");
    }
    for (size_t seq = 0; seq < count; seq++) {
      memcpy(payload, &id, 4);
      uint32_t s = (uint32_t)seq;
      memcpy(payload + 4, &s, 4);
      fill(payload, length, id, s);
      uint32_t sum = checksum(payload, length);
      memcpy(payload + 8, &sum, 4);
      send_msg(&r, payload, length, 3);
    }
    printf("done\n");
    return 0;
  }
  if (strcmp(argv[1], "consume") == 0 && argc == 4) {
    ring_t r;
    ring_open(&r, argv[2]);
    size_t count = strtoull(argv[3], NULL, 10);
    uint64_t total = 0;
    uint8_t check[1 << 16];
    for (size_t i = 0; i < count; i++) {
      uint32_t type, length = receive_msg(&r, buffer, &type);
      uint32_t producer, seq, sum;
      if (length < 12 || length > sizeof check) {
        printf("bad length %u\n", length);
        return 1;
      }
      memcpy(&producer, buffer, 4);
      memcpy(&seq, buffer + 4, 4);
      memcpy(&sum, buffer + 8, 4);
      fill(check, length, producer, seq);
      if (sum != checksum(buffer, length) || memcmp(check + 12, buffer + 12, length - 12) != 0) {
        printf("bad message %u/%u\n", producer, seq);
        return 1;
      }
      total += seq;
    }
    printf("ok %zu %llu\n", count, (unsigned long long)total);
    return 0;
  }
  if (argc < 6 || (strcmp(argv[1], "rt") != 0 && strcmp(argv[1], "tp") != 0)) goto usage;
  int rt = strcmp(argv[1], "rt") == 0;
  uint32_t size = (uint32_t)atoi(argv[2]);
  size_t count = strtoull(argv[3], NULL, 10);
  int reps = atoi(argv[4]);
  double seconds = atof(argv[5]);
  int producers = argc > 6 ? atoi(argv[6]) : 1;
  if (size > sizeof payload || producers < 1 || producers > 16) goto usage;
  signal(SIGINT, on_exit_signal);
  signal(SIGTERM, on_exit_signal);

  char name[64];
  snprintf(name, sizeof name, "/ipcbus-bench-c-%d", getpid());
  ring_t there;
  ring_create(&there, name, 1u << 20, 64);
  if (rt) {
    char back_name[64];
    snprintf(back_name, sizeof back_name, "/ipcbus-bench-c-%d-back", getpid());
    ring_t back;
    ring_create(&back, back_name, 1u << 20, 64);
    pid_t child = fork();
    if (child < 0) die("fork");
    if (child == 0) {
      made = 0;
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      ring_t in, out;
      ring_open(&in, name);
      ring_open(&out, back_name);
      for (;;) {
        uint32_t type, n = receive_msg(&in, buffer, &type);
        if (type == 9) _exit(0);
        send_msg(&out, buffer, n, type);
      }
    }
    double *samples = malloc(sizeof(double) * (count + 1));
    for (int rep = -1; rep < reps; rep++) {
      size_t n = rep < 0 ? (count < 1000 ? count : 1000) : count;
      double end = now_us() + seconds * 1e6;
      size_t done = 0;
      for (; done < n; done++) {
        double t0 = now_us();
        uint32_t type;
        send_msg(&there, payload, size, 1);
        receive_msg(&back, buffer, &type);
        double t1 = now_us();
        samples[done] = t1 - t0;
        if (rep >= 0 && seconds > 0 && done + 1 >= 1000 && t1 >= end) {
          done++;
          break;
        }
      }
      if (rep < 0) continue;
      double sum = 0;
      for (size_t i = 0; i < done; i++) sum += samples[i];
      qsort(samples, done, sizeof(double), cmp_double);
      printf("{\"p50\":%.3f,\"p99\":%.3f,\"mean\":%.3f,\"n\":%zu}\n", samples[done / 2],
             samples[(size_t)(done * 0.99)], sum / (double)done, done);
      fflush(stdout);
    }
    send_msg(&there, payload, 0, 9);
    waitpid(child, NULL, 0);
  } else {
    for (int rep = -1; rep < reps; rep++) {
      size_t n = rep < 0 ? (count < 10000 ? count : 10000) : count;
      int go[2];
      if (pipe(go) < 0) die("pipe");
      pid_t children[16];
      for (int p = 0; p < producers; p++) {
        size_t share = n / (size_t)producers + ((size_t)p < n % (size_t)producers);
        pid_t child = fork();
        if (child < 0) die("fork");
        if (child == 0) {
          made = 0;
          prctl(PR_SET_PDEATHSIG, SIGKILL);
          close(go[1]);
          ring_t out;
          ring_open(&out, name);
          char c;
          if (read(go[0], &c, 1) != 1) _exit(1);
          for (size_t i = 0; i < share; i++) send_msg(&out, payload, size, 3);
          _exit(0);
        }
        children[p] = child;
      }
      close(go[0]);
      usleep(20000); /* let the producers open the ring before the clock starts */
      double t0 = now_us();
      if (write(go[1], "gggggggggggggggg", (size_t)producers) != producers) die("write");
      close(go[1]);
      for (size_t i = 0; i < n; i++) {
        uint32_t type;
        receive_msg(&there, buffer, &type);
      }
      double t1 = now_us();
      for (int p = 0; p < producers; p++) waitpid(children[p], NULL, 0);
      if (rep >= 0) {
        printf("{\"seconds\":%.6f,\"count\":%zu}\n", (t1 - t0) / 1e6, n);
        fflush(stdout);
      }
    }
  }
  cleanup();
  return 0;
usage:
  fprintf(stderr,
          "usage: shmring rt|tp SIZE COUNT REPS SECONDS [PRODUCERS] | produce NAME COUNT SIZE ID | "
          "consume NAME COUNT\n");
  return 2;
}
