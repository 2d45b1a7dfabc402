// The hand-written C layouts and constants of ffi/ against the system's own
// headers: a small C program (built with `cc` in a temp dir) prints sizeof,
// offsetof and macro values, and each is compared with ffi/structs.ts,
// ffi/constants.ts, ffi/libc.ts (E) and the errno names of errors.ts.
import assert from "node:assert/strict";
import {
  CLOCK,
  EFD,
  F,
  MAP,
  MQ_PRIO_MAX,
  O,
  PIPE_BUF,
  POLL,
  PROT,
  RLIMIT,
  S,
  SIG,
  SPAWN,
  SYS,
  WNOHANG,
} from "../ffi/constants.ts";
import { E } from "../ffi/libc.ts";
import { FLOCK, IOVEC, MQ_ATTR, OPAQUE, POLLFD, STAT } from "../ffi/structs.ts";
import {
  IPC,
  IPC_PERM,
  MSG,
  MSQID_DS,
  SC_PAGESIZE,
  SEM,
  SEMBUF,
  SEMID_DS,
  SHM,
  SHMID_DS,
} from "../ffi/sysv.ts";
import { SYMBOLS } from "../ffi/_symbols.ts";
import { errnoName } from "../errors.ts";
import { hasCc, leftovers, TempDir } from "./_helpers.ts";

/** Every constant ipcbus hard-codes, by its C name. */
function expectedConstants(): Map<string, number> {
  const map = new Map<string, number>();
  for (const [key, value] of Object.entries(O)) map.set(`O_${key}`, value);
  for (const [key, value] of Object.entries(F)) map.set(key === "FD_CLOEXEC" ? key : `F_${key}`, value);
  for (const [key, value] of Object.entries(POLL)) map.set(`POLL${key}`, value);
  for (const [key, value] of Object.entries(EFD)) map.set(`EFD_${key}`, value);
  for (const [key, value] of Object.entries(S)) map.set(`S_${key}`, value);
  for (const [key, value] of Object.entries(SIG)) map.set(key, value);
  for (const [key, value] of Object.entries(SPAWN)) map.set(`POSIX_SPAWN_${key}`, value);
  for (const [key, value] of Object.entries(SYS)) map.set(`SYS_${key}`, Number(value));
  map.set("WNOHANG", WNOHANG);
  map.set("PIPE_BUF", PIPE_BUF);
  for (const [key, value] of Object.entries(PROT)) map.set(`PROT_${key}`, value);
  for (const [key, value] of Object.entries(MAP)) {
    if (typeof value === "number") map.set(key.startsWith("M") ? key : `MAP_${key}`, value);
  }
  for (const [key, value] of Object.entries(CLOCK)) map.set(`CLOCK_${key}`, value);
  for (const [key, value] of Object.entries(RLIMIT)) map.set(`RLIMIT_${key}`, value);
  map.set("MQ_PRIO_MAX", MQ_PRIO_MAX);
  return map;
}

/** The System V constants of ffi/sysv.ts, by their C name. */
function sysvConstants(): Map<string, number> {
  const map = new Map<string, number>();
  for (const [key, value] of Object.entries(IPC)) map.set(`IPC_${key}`, value);
  for (const [key, value] of Object.entries(MSG)) map.set(`MSG_${key}`, value);
  // semctl commands are bare (GETVAL); SEM_STAT, SEM_STAT_ANY, SEM_INFO and SEM_UNDO are prefixed.
  for (const [key, value] of Object.entries(SEM)) {
    map.set(["STAT", "STAT_ANY", "INFO", "UNDO"].includes(key) ? `SEM_${key}` : key, value);
  }
  for (const [key, value] of Object.entries(SHM)) map.set(`SHM_${key}`, value);
  map.set("_SC_PAGESIZE", SC_PAGESIZE);
  return map;
}

/** errno names used by ipcbus: the E table and every name errors.ts knows. */
function expectedErrno(): Map<string, number> {
  const map = new Map<string, number>(Object.entries(E));
  for (let n = 1; n < 200; n++) {
    const name = errnoName(n);
    if (name !== `E${n}`) map.set(name, n);
  }
  return map;
}

const LAYOUT = `
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/eventfd.h>
#include <mqueue.h>
#include <mqueue.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define P(name, value) printf("%s=%lld\\n", name, (long long)(value))
#define SIZE(type) P("sizeof " #type, sizeof(type))
#define FIELD(type, field) P(#type "." #field, offsetof(type, field)); \\
  P("sizeof " #type "." #field, sizeof(((type *)0)->field))

int main(void) {
  SIZE(struct stat);
  FIELD(struct stat, st_dev); FIELD(struct stat, st_ino); FIELD(struct stat, st_mode);
  FIELD(struct stat, st_nlink); FIELD(struct stat, st_uid); FIELD(struct stat, st_gid);
  FIELD(struct stat, st_size);
  SIZE(struct pollfd);
  FIELD(struct pollfd, fd); FIELD(struct pollfd, events); FIELD(struct pollfd, revents);
  SIZE(struct iovec);
  FIELD(struct iovec, iov_base); FIELD(struct iovec, iov_len);
  SIZE(struct flock);
  FIELD(struct flock, l_type); FIELD(struct flock, l_whence); FIELD(struct flock, l_start);
  FIELD(struct flock, l_len); FIELD(struct flock, l_pid);
  SIZE(struct mq_attr);
  FIELD(struct mq_attr, mq_flags); FIELD(struct mq_attr, mq_maxmsg); FIELD(struct mq_attr, mq_msgsize);
  FIELD(struct mq_attr, mq_curmsgs);
  SIZE(posix_spawn_file_actions_t); SIZE(posix_spawnattr_t); SIZE(sigset_t);
  SIZE(nfds_t); SIZE(mode_t); SIZE(uid_t); SIZE(pid_t); SIZE(size_t); SIZE(ssize_t); SIZE(long);
  SIZE(short); SIZE(int); SIZE(unsigned int); SIZE(void *); SIZE(char **);
  SIZE(struct ipc_perm);
  P("struct ipc_perm.key", offsetof(struct ipc_perm, __key));
  P("sizeof struct ipc_perm.key", sizeof(((struct ipc_perm *)0)->__key));
  FIELD(struct ipc_perm, uid); FIELD(struct ipc_perm, gid); FIELD(struct ipc_perm, cuid);
  FIELD(struct ipc_perm, cgid); FIELD(struct ipc_perm, mode);
  SIZE(struct msqid_ds);
  FIELD(struct msqid_ds, msg_perm); FIELD(struct msqid_ds, msg_stime); FIELD(struct msqid_ds, msg_rtime);
  FIELD(struct msqid_ds, msg_ctime); FIELD(struct msqid_ds, msg_cbytes); FIELD(struct msqid_ds, msg_qnum);
  FIELD(struct msqid_ds, msg_qbytes); FIELD(struct msqid_ds, msg_lspid); FIELD(struct msqid_ds, msg_lrpid);
  SIZE(struct semid_ds);
  FIELD(struct semid_ds, sem_perm); FIELD(struct semid_ds, sem_otime); FIELD(struct semid_ds, sem_ctime);
  FIELD(struct semid_ds, sem_nsems);
  SIZE(struct shmid_ds);
  FIELD(struct shmid_ds, shm_perm); FIELD(struct shmid_ds, shm_segsz); FIELD(struct shmid_ds, shm_atime);
  FIELD(struct shmid_ds, shm_dtime); FIELD(struct shmid_ds, shm_ctime); FIELD(struct shmid_ds, shm_cpid);
  FIELD(struct shmid_ds, shm_lpid); FIELD(struct shmid_ds, shm_nattch);
  SIZE(struct sembuf);
  FIELD(struct sembuf, sem_num); FIELD(struct sembuf, sem_op); FIELD(struct sembuf, sem_flg);
  SIZE(key_t);
  /*CONSTANTS*/
  return 0;
}
`;

function constantsSource(names: Iterable<string>): string {
  return [...names].map((name) =>
    `#ifdef ${name}\n  P("${name}", ${name});\n#else\n  printf("${name}=missing\\n");\n#endif`
  ).join("\n");
}

Deno.test({
  name: `ffi layouts and constants match the C headers${hasCc ? "" : " (skipped: no C compiler `cc` found)"}`,
  ignore: !hasCc,
  async fn(t) {
    await using dir = await TempDir.make();
    const constants = expectedConstants();
    const errnos = expectedErrno();
    const sysv = sysvConstants();
    const source = LAYOUT.replace(
      "/*CONSTANTS*/",
      constantsSource([...constants.keys(), ...[...errnos.keys()].map((name) => name), ...sysv.keys()]),
    );
    Deno.writeTextFileSync(`${dir.path}/layout.c`, source);
    const build = await new Deno.Command("cc", {
      args: ["-O0", "-o", `${dir.path}/layout`, `${dir.path}/layout.c`],
    }).output();
    assert.equal(build.code, 0, new TextDecoder().decode(build.stderr));
    const run = await new Deno.Command(`${dir.path}/layout`).output();
    assert.equal(run.code, 0);
    const c = new Map<string, number | "missing">();
    for (const line of new TextDecoder().decode(run.stdout).trim().split("\n")) {
      const [name, value] = line.split("=");
      c.set(name, value === "missing" ? "missing" : Number(value));
    }

    await t.step("struct stat", () => {
      assert.equal(STAT.size, c.get("sizeof struct stat"));
      for (
        const field of ["st_dev", "st_ino", "st_mode", "st_nlink", "st_uid", "st_gid", "st_size"] as const
      ) {
        assert.equal(STAT[field], c.get(`struct stat.${field}`), field);
      }
      // decodeStat reads: dev and ino as u64, mode/uid/gid as u32, size as i64.
      for (
        const [field, size] of [["st_dev", 8], ["st_ino", 8], ["st_mode", 4], ["st_uid", 4], ["st_gid", 4], [
          "st_size",
          8,
        ]] as const
      ) {
        assert.equal(c.get(`sizeof struct stat.${field}`), size, `size of ${field}`);
      }
    });

    await t.step("struct pollfd, struct iovec, struct flock", () => {
      assert.equal(POLLFD.size, c.get("sizeof struct pollfd"));
      for (const field of ["fd", "events", "revents"] as const) {
        assert.equal(POLLFD[field], c.get(`struct pollfd.${field}`), field);
      }
      assert.equal(c.get("sizeof struct pollfd.events"), 2);
      assert.equal(IOVEC.size, c.get("sizeof struct iovec"));
      assert.equal(IOVEC.iov_base, c.get("struct iovec.iov_base"));
      assert.equal(IOVEC.iov_len, c.get("struct iovec.iov_len"));
      assert.equal(FLOCK.size, c.get("sizeof struct flock"));
      for (const field of ["l_type", "l_whence", "l_start", "l_len", "l_pid"] as const) {
        assert.equal(FLOCK[field], c.get(`struct flock.${field}`), field);
      }
      assert.equal(c.get("sizeof struct flock.l_type"), 2, "lockWholeFile writes l_type as i16");
    });

    await t.step("struct mq_attr (posix_mq.ts reads and writes its fields as 64-bit words)", () => {
      assert.equal(MQ_ATTR.size, c.get("sizeof struct mq_attr"));
      for (const field of ["mq_flags", "mq_maxmsg", "mq_msgsize", "mq_curmsgs"] as const) {
        assert.equal(MQ_ATTR[field], c.get(`struct mq_attr.${field}`), field);
        assert.equal(c.get(`sizeof struct mq_attr.${field}`), 8, field);
      }
    });

    await t.step("opaque glibc types fit the buffers ipcbus allocates", () => {
      for (const name of ["posix_spawn_file_actions_t", "posix_spawnattr_t", "sigset_t"] as const) {
        const size = c.get(`sizeof ${name}`) as number;
        assert.ok(OPAQUE[name] >= size, `${name}: OPAQUE says ${OPAQUE[name]}, C says ${size}`);
        assert.equal(OPAQUE[name], size, `${name} (exact size)`);
      }
    });

    await t.step("C types behind the FFI signatures (_symbols.ts)", () => {
      assert.equal(c.get("sizeof nfds_t"), 8, "poll's nfds is declared u64");
      assert.deepEqual(SYMBOLS.poll.parameters, ["buffer", "u64", "i32"]);
      assert.equal(c.get("sizeof mode_t"), 4, "mkfifo/fchmod/open mode is declared u32");
      assert.equal(SYMBOLS.mkfifo.parameters[1], "u32");
      assert.equal(c.get("sizeof uid_t"), 4, "geteuid returns u32");
      assert.equal(SYMBOLS.geteuid.result, "u32");
      assert.equal(c.get("sizeof pid_t"), 4);
      assert.equal(SYMBOLS.waitpid.parameters[0], "i32");
      assert.equal(c.get("sizeof size_t"), 8);
      assert.equal(SYMBOLS.read.parameters[2], "usize");
      assert.equal(c.get("sizeof ssize_t"), 8);
      assert.equal(SYMBOLS.read.result, "isize");
      assert.equal(c.get("sizeof long"), 8, "syscall's long arguments are declared i64");
      assert.deepEqual(SYMBOLS.syscall2.parameters, ["i64", "i64", "i64"]);
      assert.equal(c.get("sizeof short"), 2, "posix_spawnattr_setflags takes a short");
      assert.equal(SYMBOLS.posix_spawnattr_setflags.parameters[1], "i16");
    });

    await t.step(
      "constants (O_*, F_*, POLL*, EFD_*, S_IF*, SIG*, POSIX_SPAWN_*, WNOHANG, PIPE_BUF, SYS_*)",
      () => {
        const wrong: string[] = [];
        for (const [name, value] of constants) {
          const actual = c.get(name);
          if (actual !== value) wrong.push(`${name}: ipcbus ${value}, C ${actual}`);
        }
        assert.deepEqual(wrong, []);
        for (
          const name of [
            "O_NONBLOCK",
            "O_CLOEXEC",
            "O_NOFOLLOW",
            "O_DIRECTORY",
            "O_CREAT",
            "O_EXCL",
            "F_OFD_SETLK",
            "F_OFD_SETLKW",
            "F_OFD_GETLK",
            "F_GETPIPE_SZ",
            "F_DUPFD_CLOEXEC",
            "POLLIN",
            "POLLOUT",
            "POLLHUP",
            "EFD_NONBLOCK",
            "PIPE_BUF",
            "SYS_pidfd_open",
          ]
        ) assert.ok(constants.has(name), `${name} is checked`);
      },
    );

    await t.step("System V layouts (ffi/sysv.ts: IPC_PERM, MSQID_DS, SEMID_DS, SHMID_DS, SEMBUF)", () => {
      // Each layout: its size, every offset, and the width its codec reads.
      const layouts = [
        ["struct ipc_perm", IPC_PERM, { key: 4, uid: 4, gid: 4, cuid: 4, cgid: 4, mode: 4 }],
        ["struct msqid_ds", MSQID_DS, {
          msg_stime: 8,
          msg_rtime: 8,
          msg_ctime: 8,
          msg_cbytes: 8,
          msg_qnum: 8,
          msg_qbytes: 8,
          msg_lspid: 4,
          msg_lrpid: 4,
        }],
        ["struct semid_ds", SEMID_DS, { sem_otime: 8, sem_ctime: 8, sem_nsems: 8 }],
        ["struct shmid_ds", SHMID_DS, {
          shm_segsz: 8,
          shm_atime: 8,
          shm_dtime: 8,
          shm_ctime: 8,
          shm_cpid: 4,
          shm_lpid: 4,
          shm_nattch: 8,
        }],
        ["struct sembuf", SEMBUF, { sem_num: 2, sem_op: 2, sem_flg: 2 }],
      ] as const;
      const wrong: string[] = [];
      for (const [type, layout, widths] of layouts) {
        if (layout.size !== c.get(`sizeof ${type}`)) {
          wrong.push(`sizeof ${type}: ipcbus ${layout.size}, C ${c.get(`sizeof ${type}`)}`);
        }
        for (const [field, width] of Object.entries(widths)) {
          const offset = (layout as Record<string, number>)[field];
          if (offset !== c.get(`${type}.${field}`)) {
            wrong.push(`${type}.${field}: ipcbus offset ${offset}, C ${c.get(`${type}.${field}`)}`);
          }
          if (width !== c.get(`sizeof ${type}.${field}`)) {
            wrong.push(
              `${type}.${field}: codec reads ${width} bytes, C has ${c.get(`sizeof ${type}.${field}`)}`,
            );
          }
        }
        assert.deepEqual(
          Object.keys(layout).filter((field) => field !== "size" && !(field in widths)),
          [],
          `${type}: every field of the layout is checked`,
        );
      }
      // decodeIpcPerm reads the ipc_perm at offset 0 of every *_ds buffer.
      for (
        const field of ["struct msqid_ds.msg_perm", "struct semid_ds.sem_perm", "struct shmid_ds.shm_perm"]
      ) {
        if (c.get(field) !== 0) wrong.push(`${field}: at ${c.get(field)}, decodeIpcPerm reads it at 0`);
      }
      assert.deepEqual(wrong, []);
      assert.equal(c.get("sizeof key_t"), 4, "key_t is declared i32 (semget/shmget/msgget/ftok)");
      assert.deepEqual(SYMBOLS.semget.parameters, ["i32", "i32", "i32"]);
      assert.equal(SYMBOLS.ftok.result, "i32");
      assert.equal(c.get("sizeof size_t"), 8, "shmget size and semop/semtimedop nsops are usize");
      assert.equal(SYMBOLS.shmget.parameters[1], "usize");
      assert.equal(SYMBOLS.semop.parameters[2], "usize");
    });

    await t.step("System V constants (ffi/sysv.ts: IPC_*, MSG_*, SEM, SHM_*, _SC_PAGESIZE)", () => {
      const wrong: string[] = [];
      for (const [name, value] of sysv) {
        const actual = c.get(name);
        if (actual !== value) wrong.push(`${name}: ipcbus ${value}, C ${actual}`);
      }
      assert.deepEqual(wrong, []);
      for (
        const name of ["IPC_CREAT", "IPC_EXCL", "IPC_NOWAIT", "IPC_RMID", "SEM_UNDO", "GETNCNT", "SHM_RDONLY"]
      ) {
        assert.ok(sysv.has(name), `${name} is checked`);
      }
    });

    await t.step("errno values and names (ffi/libc.ts E, errors.ts)", () => {
      const wrong: string[] = [];
      for (const [name, value] of errnos) {
        const actual = c.get(name);
        if (actual !== value) wrong.push(`${name}: ipcbus ${value}, C ${actual}`);
        else if (errnoName(value) !== name) {
          wrong.push(`errnoName(${value}) is ${errnoName(value)}, C says ${name}`);
        }
      }
      assert.deepEqual(wrong, []);
    });
  },
});

Deno.test("ffi_layout_test leaves nothing under /tmp", () => {
  assert.deepEqual(leftovers(), []);
});
