/**
 * The one libc symbol table of ipcbus. Each entry names its C prototype;
 * pointers passed in from JavaScript memory are `"buffer"`, pointers handed
 * back by C are `"pointer"`, and 64-bit integers (`size_t`, `long`) are
 * passed as `bigint` by callers to stay on V8's fast call path.
 *
 * Variadic C functions (`open`, `fcntl`, `syscall`) are declared with the
 * fixed arguments their callers use; integer variadic arguments are passed in
 * the same registers as fixed ones on x86_64 and aarch64 Linux.
 *
 * @module
 */

export const SYMBOLS = {
  // int *__errno_location(void);
  __errno_location: { parameters: [], result: "pointer" },
  // char *strerror(int errnum);
  strerror: { parameters: ["i32"], result: "pointer" },
  // void *dlsym(void *handle, const char *symbol);
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  // char *getenv(const char *name);
  getenv: { parameters: ["buffer"], result: "pointer" },

  // ssize_t read(int fd, void *buf, size_t count);
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t write(int fd, const void *buf, size_t count);
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  // ssize_t writev(int fd, const struct iovec *iov, int iovcnt);
  writev: { parameters: ["i32", "buffer", "i32"], result: "isize" },
  // int close(int fd);
  close: { parameters: ["i32"], result: "i32" },
  // int open(const char *pathname, int flags, mode_t mode);
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  // int fcntl(int fd, int cmd, int arg);
  fcntl: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int fcntl(int fd, int cmd, struct flock *lock);
  fcntl_lock: { name: "fcntl", parameters: ["i32", "i32", "buffer"], result: "i32" },
  // int pipe2(int pipefd[2], int flags);
  pipe2: { parameters: ["buffer", "i32"], result: "i32" },
  // int eventfd(unsigned int initval, int flags);
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  // int poll(struct pollfd *fds, nfds_t nfds, int timeout);
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },

  // int mkfifo(const char *pathname, mode_t mode);
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  // int unlink(const char *pathname);
  unlink: { parameters: ["buffer"], result: "i32" },
  // int fstat(int fd, struct stat *statbuf);
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  // int lstat(const char *pathname, struct stat *statbuf);
  lstat: { parameters: ["buffer", "buffer"], result: "i32" },
  // int fchmod(int fd, mode_t mode);
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  // uid_t geteuid(void);
  geteuid: { parameters: [], result: "u32" },
  // pid_t getpid(void);
  getpid: { parameters: [], result: "i32" },

  // int posix_spawnp(pid_t *pid, const char *file,
  //                  const posix_spawn_file_actions_t *file_actions,
  //                  const posix_spawnattr_t *attrp,
  //                  char *const argv[], char *const envp[]);
  posix_spawnp: {
    parameters: ["buffer", "buffer", "buffer", "buffer", "buffer", "pointer"],
    result: "i32",
  },
  // int posix_spawn_file_actions_init(posix_spawn_file_actions_t *file_actions);
  posix_spawn_file_actions_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_destroy(posix_spawn_file_actions_t *file_actions);
  posix_spawn_file_actions_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawn_file_actions_adddup2(posix_spawn_file_actions_t *file_actions,
  //                                      int fildes, int newfildes);
  posix_spawn_file_actions_adddup2: { parameters: ["buffer", "i32", "i32"], result: "i32" },
  // int posix_spawn_file_actions_addchdir_np(posix_spawn_file_actions_t *file_actions,
  //                                          const char *path);   (glibc >= 2.29)
  posix_spawn_file_actions_addchdir_np: {
    parameters: ["buffer", "buffer"],
    result: "i32",
    optional: true,
  },
  // int posix_spawnattr_init(posix_spawnattr_t *attr);
  posix_spawnattr_init: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_destroy(posix_spawnattr_t *attr);
  posix_spawnattr_destroy: { parameters: ["buffer"], result: "i32" },
  // int posix_spawnattr_setflags(posix_spawnattr_t *attr, short flags);
  posix_spawnattr_setflags: { parameters: ["buffer", "i16"], result: "i32" },
  // int posix_spawnattr_setsigmask(posix_spawnattr_t *attr, const sigset_t *sigmask);
  posix_spawnattr_setsigmask: { parameters: ["buffer", "buffer"], result: "i32" },
  // int posix_spawnattr_setsigdefault(posix_spawnattr_t *attr, const sigset_t *sigdefault);
  posix_spawnattr_setsigdefault: { parameters: ["buffer", "buffer"], result: "i32" },
  // int sigemptyset(sigset_t *set);
  sigemptyset: { parameters: ["buffer"], result: "i32" },
  // int sigaddset(sigset_t *set, int signum);
  sigaddset: { parameters: ["buffer", "i32"], result: "i32" },
  // pid_t waitpid(pid_t pid, int *wstatus, int options);
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  // int kill(pid_t pid, int sig);
  kill: { parameters: ["i32", "i32"], result: "i32" },
  // long syscall(long number, long arg1, long arg2);   (pidfd_open)
  syscall2: { name: "syscall", parameters: ["i64", "i64", "i64"], result: "i64" },

  // key_t ftok(const char *pathname, int proj_id);
  ftok: { parameters: ["buffer", "i32"], result: "i32" },
  // int msgget(key_t key, int msgflg);
  msgget: { parameters: ["i32", "i32"], result: "i32" },
  // int msgsnd(int msqid, const void *msgp, size_t msgsz, int msgflg);
  msgsnd: { parameters: ["i32", "buffer", "usize", "i32"], result: "i32" },
  // ssize_t msgrcv(int msqid, void *msgp, size_t msgsz, long msgtyp, int msgflg);
  msgrcv: { parameters: ["i32", "buffer", "usize", "i64", "i32"], result: "isize" },
  // int msgctl(int msqid, int cmd, struct msqid_ds *buf);
  msgctl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  // int semget(key_t key, int nsems, int semflg);
  semget: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int semop(int semid, struct sembuf *sops, size_t nsops);
  semop: { parameters: ["i32", "buffer", "usize"], result: "i32" },
  // int semtimedop(int semid, struct sembuf *sops, size_t nsops, const struct timespec *timeout);
  semtimedop: { parameters: ["i32", "buffer", "usize", "buffer"], result: "i32" },
  // int semctl(int semid, int semnum, int cmd, union semun arg);   (an int, or a pointer)
  semctl: { parameters: ["i32", "i32", "i32", "u64"], result: "i32" },
  // int semctl(int semid, int semnum, int cmd, union semun arg);   (arg.array / arg.buf from JS memory)
  semctl_buffer: { name: "semctl", parameters: ["i32", "i32", "i32", "buffer"], result: "i32" },
  // int shmget(key_t key, size_t size, int shmflg);
  shmget: { parameters: ["i32", "usize", "i32"], result: "i32" },
  // void *shmat(int shmid, const void *shmaddr, int shmflg);
  shmat: { parameters: ["i32", "pointer", "i32"], result: "pointer" },
  // int shmdt(const void *shmaddr);
  shmdt: { parameters: ["pointer"], result: "i32" },
  // int shmctl(int shmid, int cmd, struct shmid_ds *buf);
  shmctl: { parameters: ["i32", "i32", "buffer"], result: "i32" },
  // long sysconf(int name);
  sysconf: { parameters: ["i32"], result: "i64" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
