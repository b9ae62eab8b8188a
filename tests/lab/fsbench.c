// fsbench: a small file-system benchmark. The lab runs it in the guest (on the
// virtio-fs share) and in L1 (on the shared directory) and prints the ratio.
//
// usage: fsbench DIR [--mib N] [--files N]      (defaults: 64 MiB, 10000 files)
//
// Works only inside a fresh DIR/fsbench.<pid>, removed at the end (also on
// failures). Steps, each timed with CLOCK_MONOTONIC: write N MiB in 1 MiB
// write() calls + fsync; read it back in 1 MiB read() calls; create, stat and
// unlink N empty files in one directory. Prints exactly one line on stdout:
//   FSBENCH dir=D write_mib_s=.. read_mib_s=.. create_per_s=.. stat_per_s=.. unlink_per_s=.. mib=N files=N
// Exit status: 0 ok, 1 a syscall failed (message on stderr), 2 bad arguments.
// Built with `gcc -O2 -static -o fsbench fsbench.c`; it is our own helper.
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BLOCK_SIZE (1024 * 1024)
#define MAX_MIB 1048576L        // 1 TiB
#define MAX_FILES 10000000L     // keeps names at f%08ld
#define USAGE "usage: fsbench DIR [--mib N] [--files N]  (defaults: --mib 64 --files 10000)\n"

static char block[BLOCK_SIZE];
static char work_dir[PATH_MAX];
static char data_path[PATH_MAX];
static char file_path[PATH_MAX];

// What exists and must be removed by cleanup().
static int work_dir_made;
static int data_file_made;
static long files_created;      // f00000000 .. f(files_created-1) were created
static long files_removed;      // ... and the first files_removed of them unlinked

// Formats the path of metadata file `index` into file_path; 0 on success.
static int format_file_path(long index)
{
    int n = snprintf(file_path, sizeof file_path, "%s/f%08ld", work_dir, index);
    if (n < 0 || (size_t)n >= sizeof file_path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    return 0;
}

// Removes whatever this run created, ignoring errors; returns rmdir's result.
static int cleanup(void)
{
    if (data_file_made && unlink(data_path) == 0)
        data_file_made = 0;
    for (long i = files_removed; i < files_created; i++)
        if (format_file_path(i) == 0)
            unlink(file_path);
    files_removed = files_created;
    if (!work_dir_made)
        return 0;
    work_dir_made = 0;
    return rmdir(work_dir);
}

// Reports a failed syscall (errno is still its error), cleans up, exits 1.
static void fail(const char *step, const char *path)
{
    int saved = errno;
    fprintf(stderr, "fsbench: %s: %s: %s\n", step, path, strerror(saved));
    cleanup();
    exit(1);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// count per second over the interval that started at `start`.
static double rate_since(double start, double count)
{
    double elapsed = now_seconds() - start;
    return count / (elapsed > 1e-9 ? elapsed : 1e-9);
}

// Parses a decimal number in 1..max; 0 on success.
static int parse_count(const char *text, long max, long *out)
{
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < 1 || value > max)
        return -1;
    *out = value;
    return 0;
}

// Step 1: writes `mib` MiB of non-zero data then fsyncs; returns MiB/s.
static double bench_write(long mib)
{
    for (size_t i = 0; i < BLOCK_SIZE; i++)
        block[i] = (char)(1 + i % 251);
    double start = now_seconds();
    int fd = open(data_path, O_CREAT | O_EXCL | O_WRONLY, 0644);
    if (fd < 0)
        fail("write", data_path);
    data_file_made = 1;
    for (long b = 0; b < mib; b++) {
        size_t done = 0;
        while (done < BLOCK_SIZE) {
            ssize_t n = write(fd, block + done, BLOCK_SIZE - done);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0) {
                if (n == 0)
                    errno = EIO;
                fail("write", data_path);
            }
            done += (size_t)n;
        }
    }
    if (fsync(fd) != 0)
        fail("fsync", data_path);
    double rate = rate_since(start, (double)mib);
    if (close(fd) != 0)
        fail("close", data_path);
    return rate;
}

// Step 2: reads the file back and checks its length; returns MiB/s.
// The data may well come from the page cache (of the guest, or of L1 behind
// virtio-fs); that is accepted: this measures the read path as a program sees it.
static double bench_read(long mib)
{
    long long expected = (long long)mib * BLOCK_SIZE, total = 0;
    double start = now_seconds();
    int fd = open(data_path, O_RDONLY);
    if (fd < 0)
        fail("read", data_path);
    for (;;) {
        ssize_t n = read(fd, block, BLOCK_SIZE);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail("read", data_path);
        if (n == 0)
            break;
        total += n;
    }
    double rate = rate_since(start, (double)mib);
    if (close(fd) != 0)
        fail("close", data_path);
    if (total != expected) {
        fprintf(stderr, "fsbench: read: %s: read %lld bytes, wrote %lld\n",
                data_path, total, expected);
        cleanup();
        exit(1);
    }
    return rate;
}

// Step 3: create, stat and unlink `files` empty files; rates in files/s.
static void bench_metadata(long files, double *create, double *stat_rate, double *unlink_rate)
{
    struct stat st;
    double start = now_seconds();
    for (long i = 0; i < files; i++) {
        if (format_file_path(i) != 0)
            fail("create", work_dir);
        int fd = open(file_path, O_CREAT | O_EXCL | O_WRONLY, 0644);
        if (fd < 0)
            fail("create", file_path);
        files_created = i + 1;
        if (close(fd) != 0)
            fail("create", file_path);
    }
    *create = rate_since(start, (double)files);
    start = now_seconds();
    for (long i = 0; i < files; i++)
        if (format_file_path(i) != 0 || stat(file_path, &st) != 0)
            fail("stat", file_path);
    *stat_rate = rate_since(start, (double)files);
    start = now_seconds();
    for (long i = 0; i < files; i++) {
        if (format_file_path(i) != 0 || unlink(file_path) != 0)
            fail("unlink", file_path);
        files_removed = i + 1;
    }
    *unlink_rate = rate_since(start, (double)files);
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    long mib = 64, files = 10000;
    for (int i = 1; i < argc; i++) {
        int is_mib = strcmp(argv[i], "--mib") == 0;
        if (is_mib || strcmp(argv[i], "--files") == 0) {
            if (i + 1 >= argc || parse_count(argv[i + 1], is_mib ? MAX_MIB : MAX_FILES,
                                             is_mib ? &mib : &files) != 0) {
                fprintf(stderr, "fsbench: %s needs a number from 1 to %ld\n", argv[i],
                        is_mib ? MAX_MIB : MAX_FILES);
                fputs(USAGE, stderr);
                return 2;
            }
            i++;
        } else if (argv[i][0] == '-' || dir != NULL || argv[i][0] == '\0') {
            fprintf(stderr, "fsbench: unexpected argument: '%s'\n", argv[i]);
            fputs(USAGE, stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (dir == NULL) {
        fputs(USAGE, stderr);
        return 2;
    }

    int n = snprintf(work_dir, sizeof work_dir, "%s/fsbench.%ld", dir, (long)getpid());
    int m = snprintf(data_path, sizeof data_path, "%s/data", work_dir);
    if (n < 0 || (size_t)n >= sizeof work_dir || m < 0 || (size_t)m >= sizeof data_path) {
        errno = ENAMETOOLONG;
        fail("mkdir", dir);
    }
    if (mkdir(work_dir, 0755) != 0)
        fail("mkdir", work_dir);
    work_dir_made = 1;

    double write_rate = bench_write(mib);
    double read_rate = bench_read(mib);
    if (unlink(data_path) != 0)
        fail("unlink", data_path);
    data_file_made = 0;
    double create_rate, stat_rate, unlink_rate;
    bench_metadata(files, &create_rate, &stat_rate, &unlink_rate);
    if (cleanup() != 0)
        fail("rmdir", work_dir);

    printf("FSBENCH dir=%s write_mib_s=%.1f read_mib_s=%.1f create_per_s=%.1f stat_per_s=%.1f "
           "unlink_per_s=%.1f mib=%ld files=%ld\n", dir, write_rate, read_rate, create_rate,
           stat_rate, unlink_rate, mib, files);
    if (fflush(stdout) != 0)
        fail("output", "stdout");
    return 0;
}
