/**
 * Linux constants for x86_64 and aarch64. Most are identical on both; where
 * they differ the value is picked from `Deno.build.arch` once, at import.
 *
 * @module
 */

const ARCH = Deno.build.arch;
const arm = ARCH === "aarch64";

/** open(2) flags. */
export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  NONBLOCK: 0o4000,
  DIRECTORY: arm ? 0o40000 : 0o200000,
  NOFOLLOW: arm ? 0o100000 : 0o400000,
  CLOEXEC: 0o2000000,
  /** A descriptor that only locates a file (fstat, fstatfs), opening nothing (same on both). */
  PATH: 0o10000000,
} as const;

/** fcntl(2) commands and flags. */
export const F = {
  DUPFD_CLOEXEC: 1030,
  GETFD: 1,
  SETFD: 2,
  GETFL: 3,
  SETFL: 4,
  SETPIPE_SZ: 1031,
  GETPIPE_SZ: 1032,
  GETLK: 5,
  SETLK: 6,
  SETLKW: 7,
  OFD_GETLK: 36,
  OFD_SETLK: 37,
  OFD_SETLKW: 38,
  RDLCK: 0,
  WRLCK: 1,
  UNLCK: 2,
  FD_CLOEXEC: 1,
} as const;

/** poll(2) event bits. */
export const POLL = {
  IN: 0x001,
  OUT: 0x004,
  ERR: 0x008,
  HUP: 0x010,
  NVAL: 0x020,
} as const;

/** eventfd(2) flags. */
export const EFD = { NONBLOCK: 0o4000, CLOEXEC: 0o2000000 } as const;

/** socket(2) and send(2) constants (Linux): Unix stream sockets, non-blocking, close-on-exec. */
export const SOCK = {
  AF_UNIX: 1,
  STREAM: 1,
  NONBLOCK: 0o4000,
  CLOEXEC: 0o2000000,
  MSG_DONTWAIT: 0x40,
  MSG_NOSIGNAL: 0x4000,
} as const;

/** File type bits of `st_mode`. */
export const S = {
  IFMT: 0o170000,
  IFSOCK: 0o140000,
  IFLNK: 0o120000,
  IFREG: 0o100000,
  IFBLK: 0o60000,
  IFDIR: 0o40000,
  IFCHR: 0o20000,
  IFIFO: 0o10000,
} as const;

/** Signal numbers (the same on x86_64 and aarch64). */
export const SIG = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
} as const;

/** posix_spawnattr_setflags(3) flags and waitpid(2) options. */
export const SPAWN = { SETSIGDEF: 0x04, SETSIGMASK: 0x08 } as const;

/** waitpid(2) options. */
export const WNOHANG = 1;

/** Writes of at most this many bytes to a pipe or FIFO are atomic (Linux). */
export const PIPE_BUF = 4096;

/** Syscall numbers used through syscall(2) (the "unified" range, equal on both). */
export const SYS = { pidfd_open: 434n } as const;

/** mmap(2) protection bits. */
export const PROT = { NONE: 0, READ: 1, WRITE: 2 } as const;

/** mmap(2), msync(2) and mremap(2) flags. */
export const MAP = {
  SHARED: 0x01,
  PRIVATE: 0x02,
  FAILED: 0xffffffffffffffffn,
  MS_ASYNC: 1,
  MS_INVALIDATE: 2,
  MS_SYNC: 4,
  MREMAP_MAYMOVE: 1,
} as const;

/** clock_gettime(2) clocks. */
export const CLOCK = { REALTIME: 0, MONOTONIC: 1 } as const;

/** getrlimit(2) resources. */
export const RLIMIT = { NOFILE: 7, MSGQUEUE: 12 } as const;

/** The largest POSIX message priority plus one (MQ_PRIO_MAX on Linux). */
export const MQ_PRIO_MAX = 32768;
