/*
 * Baseline for `deno task bench`: the classic C answer to p2m's socket
 * transport. A fork-per-client AF_UNIX server that sends the file with
 * sendfile(2), and a client that reads into a 1 MiB buffer and writes.
 * No framing, no verification: the upper bound a socket transport can reach.
 *
 *   sendfile_server serve FILE SOCKET PEERS   accept PEERS clients, one child each
 *   sendfile_server fetch SOCKET OUT          connect (retrying 10 s), copy to OUT
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *what) {
  perror(what);
  exit(1);
}

static struct sockaddr_un address(const char *path) {
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  if (strlen(path) >= sizeof addr.sun_path) {
    fprintf(stderr, "socket path too long\n");
    exit(2);
  }
  strcpy(addr.sun_path, path);
  return addr;
}

static int serve(const char *file, const char *path, int peers) {
  int fd = open(file, O_RDONLY);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) < 0) die(file);
  int server = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un addr = address(path);
  unlink(path);
  if (bind(server, (struct sockaddr *)&addr, sizeof addr) < 0) die("bind");
  if (listen(server, 128) < 0) die("listen");
  for (int i = 0; i < peers; i++) {
    int client = accept(server, NULL, NULL);
    if (client < 0) die("accept");
    pid_t pid = fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      off_t offset = 0;
      while (offset < st.st_size) {
        ssize_t n = sendfile(client, fd, &offset, st.st_size - offset);
        if (n <= 0) _exit(1);
      }
      _exit(0);
    }
    close(client);
  }
  close(server);
  unlink(path);
  int failed = 0, status;
  while (wait(&status) > 0) failed |= !WIFEXITED(status) || WEXITSTATUS(status) != 0;
  return failed;
}

static int fetch(const char *path, const char *out) {
  struct sockaddr_un addr = address(path);
  int sock = socket(AF_UNIX, SOCK_STREAM, 0);
  for (int tries = 0; connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0; tries++) {
    if (tries > 10000) die("connect");
    nanosleep(&(struct timespec){0, 1000000}, NULL);
  }
  int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0) die(out);
  size_t size = 1 << 20;
  char *buffer = malloc(size);
  for (;;) {
    ssize_t n = read(sock, buffer, size);
    if (n < 0) die("read");
    if (n == 0) break;
    for (ssize_t done = 0; done < n;) {
      ssize_t w = write(fd, buffer + done, n - done);
      if (w < 0) die("write");
      done += w;
    }
  }
  return close(fd) < 0;
}

int main(int argc, char **argv) {
  if (argc == 5 && strcmp(argv[1], "serve") == 0) return serve(argv[2], argv[3], atoi(argv[4]));
  if (argc == 4 && strcmp(argv[1], "fetch") == 0) return fetch(argv[2], argv[3]);
  fprintf(stderr, "usage: %s serve FILE SOCKET PEERS | fetch SOCKET OUT\n", argv[0]);
  return 2;
}
