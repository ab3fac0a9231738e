// rename_exchange A B: swaps the paths A and B (renameat2 RENAME_EXCHANGE) over and over until
// killed, for the seal scenarios' hostile user who swaps a folder of the dataset for a symlink
// to somewhere else while the tree is sealed. Exits 1 (with the error) if a swap fails.
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: rename_exchange A B\n");
    return 2;
  }
  for (;;) {
    if (syscall(SYS_renameat2, AT_FDCWD, argv[1], AT_FDCWD, argv[2], RENAME_EXCHANGE) != 0) {
      perror("renameat2");
      return 1;
    }
  }
}
