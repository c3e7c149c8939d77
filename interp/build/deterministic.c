/*
 * Preloaded (LD_PRELOAD) into componentize-py while it builds the Python
 * interpreter (host/src/build/interpreter.rs), so that the snapshot it takes
 * does not depend on when or where it was built.
 *
 * componentize-py runs CPython once at build time under its own wasmtime and
 * snapshots its memory. That run reads WASI `random` (CPython's hash secret,
 * which then orders every set and dict of strings in every instance) and the
 * wall clock from the host, and componentize-py offers no option to fix
 * either. Here the host's randomness is a fixed xorshift stream and the wall
 * clock a fixed instant, for this one process. Nothing else is changed: the
 * monotonic clocks stay real, so timers and the build's deadline still work.
 * Every instance reseeds `random` at run time (componentize-py does), so
 * variants still get fresh random numbers.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

/* 1980-01-01T00:00:00Z, the earliest time a zip file can hold. */
#define FIXED_TIME 315532800

static uint64_t state = 0x9e3779b97f4a7c15ull;

static ssize_t fixed_bytes(void *buf, size_t n) {
  unsigned char *p = buf;
  for (size_t i = 0; i < n; i++) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    p[i] = (unsigned char)state;
  }
  return (ssize_t)n;
}

ssize_t getrandom(void *buf, size_t n, unsigned int flags) {
  (void)flags;
  return fixed_bytes(buf, n);
}

int getentropy(void *buf, size_t n) {
  fixed_bytes(buf, n);
  return 0;
}

/* Rust's `getrandom` crate may call the system call through `syscall`. */
long syscall(long number, ...) {
  va_list ap;
  long a[6];
  va_start(ap, number);
  for (int i = 0; i < 6; i++) a[i] = va_arg(ap, long);
  va_end(ap);
  if (number == SYS_getrandom) return fixed_bytes((void *)a[0], (size_t)a[1]);
  static long (*real)(long, ...) = 0;
  if (!real) real = (long (*)(long, ...))dlsym(RTLD_NEXT, "syscall");
  return real(number, a[0], a[1], a[2], a[3], a[4], a[5]);
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
  if (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE) {
    ts->tv_sec = FIXED_TIME;
    ts->tv_nsec = 0;
    return 0;
  }
  static int (*real)(clockid_t, struct timespec *) = 0;
  if (!real) real = (int (*)(clockid_t, struct timespec *))dlsym(RTLD_NEXT, "clock_gettime");
  return real(clock, ts);
}
