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

  // int socket(int domain, int type, int protocol);
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  // int bind(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // int listen(int sockfd, int backlog);
  listen: { parameters: ["i32", "i32"], result: "i32" },
  // int connect(int sockfd, const struct sockaddr *addr, socklen_t addrlen);
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  // ssize_t send(int sockfd, const void *buf, size_t len, int flags);
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },

  // int mkfifo(const char *pathname, mode_t mode);
  mkfifo: { parameters: ["buffer", "u32"], result: "i32" },
  // int unlink(const char *pathname);
  unlink: { parameters: ["buffer"], result: "i32" },
  // int fstat(int fd, struct stat *statbuf);
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  // int fstatfs(int fd, struct statfs *buf);
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
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

  // POSIX message queues (libc since glibc 2.34; an mqd_t is a file descriptor on Linux).
  // mqd_t mq_open(const char *name, int oflag, mode_t mode, struct mq_attr *attr);
  mq_open: { parameters: ["buffer", "i32", "u32", "buffer"], result: "i32", optional: true },
  // int mq_close(mqd_t mqdes);
  mq_close: { parameters: ["i32"], result: "i32", optional: true },
  // int mq_unlink(const char *name);
  mq_unlink: { parameters: ["buffer"], result: "i32", optional: true },
  // int mq_send(mqd_t mqdes, const char *msg_ptr, size_t msg_len, unsigned int msg_prio);
  mq_send: { parameters: ["i32", "buffer", "usize", "u32"], result: "i32", optional: true },
  // ssize_t mq_receive(mqd_t mqdes, char *msg_ptr, size_t msg_len, unsigned int *msg_prio);
  mq_receive: { parameters: ["i32", "buffer", "usize", "buffer"], result: "isize", optional: true },
  // int mq_timedsend(mqd_t, const char *, size_t, unsigned int, const struct timespec *abs_timeout);
  mq_timedsend: { parameters: ["i32", "buffer", "usize", "u32", "buffer"], result: "i32", optional: true },
  // ssize_t mq_timedreceive(mqd_t, char *, size_t, unsigned int *, const struct timespec *abs_timeout);
  mq_timedreceive: {
    parameters: ["i32", "buffer", "usize", "buffer", "buffer"],
    result: "isize",
    optional: true,
  },
  // int mq_getattr(mqd_t mqdes, struct mq_attr *attr);
  mq_getattr: { parameters: ["i32", "buffer"], result: "i32", optional: true },

  // POSIX semaphores (named, and unnamed in shared memory).
  // sem_t *sem_open(const char *name, int oflag, mode_t mode, unsigned int value);
  sem_open: { parameters: ["buffer", "i32", "u32", "u32"], result: "pointer", optional: true },
  // int sem_close(sem_t *sem);
  sem_close: { parameters: ["pointer"], result: "i32", optional: true },
  // int sem_unlink(const char *name);
  sem_unlink: { parameters: ["buffer"], result: "i32", optional: true },
  // int sem_init(sem_t *sem, int pshared, unsigned int value);
  sem_init: { parameters: ["pointer", "i32", "u32"], result: "i32", optional: true },
  // int sem_post(sem_t *sem);
  sem_post: { parameters: ["pointer"], result: "i32", optional: true },
  // int sem_wait(sem_t *sem);
  sem_wait: { parameters: ["pointer"], result: "i32", optional: true },
  // int sem_trywait(sem_t *sem);
  sem_trywait: { parameters: ["pointer"], result: "i32", optional: true },
  // int sem_timedwait(sem_t *sem, const struct timespec *abs_timeout);
  sem_timedwait: { parameters: ["pointer", "buffer"], result: "i32", optional: true },
  // int sem_getvalue(sem_t *sem, int *sval);
  sem_getvalue: { parameters: ["pointer", "buffer"], result: "i32", optional: true },

  // POSIX shared memory and mapped files.
  // int shm_open(const char *name, int oflag, mode_t mode);
  shm_open: { parameters: ["buffer", "i32", "u32"], result: "i32", optional: true },
  // int shm_unlink(const char *name);
  shm_unlink: { parameters: ["buffer"], result: "i32", optional: true },
  // int ftruncate(int fd, off_t length);
  ftruncate: { parameters: ["i32", "i64"], result: "i32" },
  // int posix_fallocate(int fd, off_t offset, off_t len);   (returns an errno value, sets no errno)
  posix_fallocate: { parameters: ["i32", "i64", "i64"], result: "i32" },
  // int fdatasync(int fd);
  fdatasync: { parameters: ["i32"], result: "i32" },
  // int fsync(int fd);
  fsync: { parameters: ["i32"], result: "i32" },
  // void *mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset);
  mmap: { parameters: ["pointer", "usize", "i32", "i32", "i32", "i64"], result: "pointer" },
  // int munmap(void *addr, size_t length);
  munmap: { parameters: ["pointer", "usize"], result: "i32" },
  // int msync(void *addr, size_t length, int flags);
  msync: { parameters: ["pointer", "usize", "i32"], result: "i32" },
  // void *mremap(void *old_address, size_t old_size, size_t new_size, int flags);
  mremap: { parameters: ["pointer", "usize", "usize", "i32"], result: "pointer" },
  // int clock_gettime(clockid_t clockid, struct timespec *tp);
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
  // int getrlimit(int resource, struct rlimit *rlim);
  getrlimit: { parameters: ["i32", "buffer"], result: "i32" },
  // DIR *opendir(const char *name);
  opendir: { parameters: ["buffer"], result: "pointer" },
  // struct dirent *readdir(DIR *dirp);
  readdir: { parameters: ["pointer"], result: "pointer" },
  // int closedir(DIR *dirp);
  closedir: { parameters: ["pointer"], result: "i32" },

  // Mapped-file logs (file:).
  // long syscall(SYS_futex, uint32_t *uaddr, int op, uint32_t val, const struct timespec *timeout,
  //              uint32_t *uaddr2, uint32_t val3);   (FUTEX_WAKE on a word of a shared file mapping)
  futex: {
    name: "syscall",
    parameters: ["i64", "pointer", "i64", "i64", "pointer", "pointer", "i64"],
    result: "i64",
  },
  // int link(const char *oldpath, const char *newpath);
  link: { parameters: ["buffer", "buffer"], result: "i32" },
} as const satisfies Deno.ForeignLibraryInterface;

/** The loaded symbols. */
export type Libc = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];
