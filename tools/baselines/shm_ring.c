/*
 * Baseline for `deno task bench`: a tuned C shared-memory ring, the bar for
 * p2m's shm transport. One sender reads the file into K slots; every
 * receiver writes the published slots to its output while the sender fills
 * the next ones. The slowest receiver's cursor gates the sender. Waiting is
 * on process-shared semaphores, posted only when the other side has said it
 * is waiting, so a wake-up is paid per stall, not per chunk. No liveness
 * checks, no verification: the upper bound a ring can reach.
 *
 *   shm_ring send FILE NAME PEERS [CHUNK SLOTS]
 *   shm_ring receive NAME OUT
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAGIC 0x474e4952u /* "RING" */
#define MAX_PEERS 64

struct receiver {
  _Atomic uint64_t consumed;
  _Atomic uint32_t waiting;
  sem_t wake;
};

struct ring {
  _Atomic uint32_t magic;
  uint32_t peers, slots;
  uint64_t size, chunk;
  _Atomic uint32_t attached, done;
  _Atomic uint64_t published;
  _Atomic uint32_t sender_waiting;
  sem_t sender_wake;
  struct receiver rx[MAX_PEERS];
};

static void die(const char *what) {
  perror(what);
  exit(1);
}

static size_t data_offset(void) {
  return (sizeof(struct ring) + 4095) & ~(size_t)4095;
}

/* Sleep on `sem` until `ready()` holds; `flag` tells the poster we wait. */
#define WAIT_UNTIL(cond, flag, sem)                  \
  while (!(cond)) {                                  \
    atomic_store(&(flag), 1);                        \
    if (cond) {                                      \
      atomic_store(&(flag), 0);                      \
      break;                                         \
    }                                                \
    while (sem_wait(&(sem)) < 0) {                   \
    }                                                \
  }

static void wake(_Atomic uint32_t *flag, sem_t *sem) {
  if (atomic_exchange(flag, 0)) sem_post(sem);
}

static uint64_t slowest(struct ring *r) {
  uint64_t min = UINT64_MAX;
  for (uint32_t i = 0; i < r->peers; i++) {
    uint64_t c = atomic_load(&r->rx[i].consumed);
    if (c < min) min = c;
  }
  return min;
}

static int all_done(struct ring *r) {
  return atomic_load(&r->done) == r->peers;
}

static int send_file(const char *file, const char *name, int peers, uint64_t chunk, int slots) {
  int fd = open(file, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) die(file);
  shm_unlink(name);
  int shm = shm_open(name, O_CREAT | O_EXCL | O_RDWR, 0600);
  if (shm < 0) die("shm_open");
  size_t length = data_offset() + chunk * slots;
  if (ftruncate(shm, length) < 0) die("ftruncate");
  struct ring *r = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
  if (r == MAP_FAILED) die("mmap");
  char *data = (char *)r + data_offset();
  r->peers = peers;
  r->slots = slots;
  r->size = st.st_size;
  r->chunk = chunk;
  sem_init(&r->sender_wake, 1, 0);
  for (int i = 0; i < peers; i++) sem_init(&r->rx[i].wake, 1, 0);
  atomic_store(&r->magic, MAGIC);

  WAIT_UNTIL(atomic_load(&r->attached) >= (uint32_t)peers, r->sender_waiting, r->sender_wake);
  uint64_t window = chunk * slots;
  for (uint64_t pos = 0; pos < r->size;) {
    WAIT_UNTIL(pos - slowest(r) < window, r->sender_waiting, r->sender_wake);
    uint64_t want = r->size - pos < chunk ? r->size - pos : chunk;
    char *slot = data + (pos / chunk % slots) * chunk;
    for (uint64_t got = 0; got < want;) {
      ssize_t n = read(fd, slot + got, want - got);
      if (n <= 0) die("read");
      got += n;
    }
    pos += want;
    atomic_store(&r->published, pos);
    for (int i = 0; i < peers; i++) wake(&r->rx[i].waiting, &r->rx[i].wake);
  }
  WAIT_UNTIL(all_done(r), r->sender_waiting, r->sender_wake);
  shm_unlink(name);
  return 0;
}

static int receive(const char *name, const char *out) {
  int shm;
  for (int tries = 0; (shm = shm_open(name, O_RDWR, 0)) < 0; tries++) {
    if (tries > 10000) die("shm_open");
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  /* The sender sizes the object after creating it: mapping it before then
   * and touching the header would be SIGBUS, so wait for the size first. */
  struct stat st;
  for (int tries = 0; fstat(shm, &st) == 0 && (size_t)st.st_size < data_offset(); tries++) {
    if (tries > 10000) die("ftruncate by the sender");
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  struct ring *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
  if (r == MAP_FAILED) die("mmap");
  while (atomic_load(&r->magic) != MAGIC) nanosleep(&(struct timespec){0, 1000000}, NULL);
  size_t length = data_offset() + r->chunk * r->slots;
  munmap(r, sizeof *r);
  r = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_SHARED, shm, 0);
  if (r == MAP_FAILED) die("mmap");
  char *data = (char *)r + data_offset();
  uint32_t me = atomic_fetch_add(&r->attached, 1);
  wake(&r->sender_waiting, &r->sender_wake);
  struct receiver *self = &r->rx[me];
  int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die(out);
  for (uint64_t pos = 0; pos < r->size;) {
    WAIT_UNTIL(atomic_load(&r->published) > pos, self->waiting, self->wake);
    uint64_t published = atomic_load(&r->published);
    while (pos < published) { /* drain everything published before waiting again */
      uint64_t in_slot = pos % r->chunk;
      uint64_t n = r->chunk - in_slot < published - pos ? r->chunk - in_slot : published - pos;
      const char *from = data + (pos / r->chunk % r->slots) * r->chunk + in_slot;
      for (uint64_t done = 0; done < n;) {
        ssize_t w = write(fd, from + done, n - done);
        if (w < 0) die("write");
        done += w;
      }
      pos += n;
      atomic_store(&self->consumed, pos);
      wake(&r->sender_waiting, &r->sender_wake);
    }
  }
  if (close(fd) < 0) die("close");
  atomic_fetch_add(&r->done, 1);
  wake(&r->sender_waiting, &r->sender_wake);
  return 0;
}

int main(int argc, char **argv) {
  if ((argc == 5 || argc == 7) && strcmp(argv[1], "send") == 0) {
    uint64_t chunk = argc == 7 ? strtoull(argv[5], NULL, 10) : 1 << 20;
    int slots = argc == 7 ? atoi(argv[6]) : 16;
    int peers = atoi(argv[4]);
    if (peers < 1 || peers > MAX_PEERS || chunk == 0 || slots < 1) return 2;
    return send_file(argv[2], argv[3], peers, chunk, slots);
  }
  if (argc == 4 && strcmp(argv[1], "receive") == 0) return receive(argv[2], argv[3]);
  fprintf(stderr, "usage: %s send FILE NAME PEERS [CHUNK SLOTS] | receive NAME OUT\n", argv[0]);
  return 2;
}
