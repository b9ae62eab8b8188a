// labwatch: run one VMM inside the lab's L1 VM and measure it.
//
// Runs a command with stdin on /dev/null, its stdout and stderr captured to
// two files (each capped, the guest console is untrusted input), a hard
// timeout (SIGKILL to the command's process group), the wall time at which
// given marker strings first appear on either stream, and the command's peak
// RSS (ru_maxrss from wait4, the same figure as VmHWM). It prints exactly one
// summary line on its own stdout:
//
//   LABWATCH rc=0 timedout=0 wall_ms=812.4 maxrss_kib=40212 user_ms=20 sys_ms=310 agent_ms=790.1
//
// rc is the exit code, or 128+signal when the command was killed.
// A marker that never appeared is printed as -1.
//
// usage: labwatch -t SECONDS -o OUT_FILE -e ERR_FILE [-m NAME=STRING]... -- CMD [ARGS...]
// Exit status: 0 when the summary was printed, 2 on a usage or setup error.
// Built static by tests/lab/lab.py (gcc -static); it is our own helper.
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_MARKERS 8
#define LINE_CAP 4096                   // longer lines are matched in pieces
#define FILE_CAP (8L * 1024 * 1024)     // bytes kept per stream

struct marker {
    const char *name;
    const char *text;
    double at_ms;                       // -1 until seen
};

struct stream {
    int fd;                             // read end of the pipe, -1 once closed
    FILE *out;                          // capture file
    long written;                       // bytes written to `out`
    char line[LINE_CAP + 1];            // current partial line
    size_t len;
};

static struct marker markers[MAX_MARKERS];
static int marker_count;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void usage(void) {
    fprintf(stderr, "usage: labwatch -t SECONDS -o OUT -e ERR [-m NAME=STRING]... -- CMD [ARGS...]\n");
}

// Check one complete (or capped) line against the markers not yet seen.
static void match_line(struct stream *s, double at_ms) {
    s->line[s->len] = '\0';
    for (int i = 0; i < marker_count; i++) {
        if (markers[i].at_ms < 0 && strstr(s->line, markers[i].text) != NULL) {
            markers[i].at_ms = at_ms;
        }
    }
    s->len = 0;
}

// Append a chunk read from the command to its capture file and line buffer.
static void take_chunk(struct stream *s, const char *buf, size_t n, double at_ms) {
    if (s->written < FILE_CAP) {
        size_t room = (size_t)(FILE_CAP - s->written);
        size_t keep = n < room ? n : room;
        fwrite(buf, 1, keep, s->out);
        s->written += (long)keep;
    }
    for (size_t i = 0; i < n; i++) {
        if (buf[i] == '\n' || s->len == LINE_CAP) {
            match_line(s, at_ms);
            if (buf[i] == '\n') {
                continue;
            }
        }
        // NUL bytes would cut strstr short; a guest may send anything.
        s->line[s->len++] = buf[i] == '\0' ? ' ' : buf[i];
    }
}

static int open_capture(struct stream *s, const char *path, int fd) {
    s->fd = fd;
    s->written = 0;
    s->len = 0;
    s->out = fopen(path, "w");
    if (s->out == NULL) {
        fprintf(stderr, "labwatch: cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    return 0;
}

int main(int argc, char **argv) {
    double timeout_s = 60;
    const char *out_path = NULL, *err_path = NULL;
    int i = 1;
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) {
            i++;
            break;
        } else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            timeout_s = atof(argv[++i]);
        } else if (!strcmp(argv[i], "-o") && i + 1 < argc) {
            out_path = argv[++i];
        } else if (!strcmp(argv[i], "-e") && i + 1 < argc) {
            err_path = argv[++i];
        } else if (!strcmp(argv[i], "-m") && i + 1 < argc && marker_count < MAX_MARKERS) {
            char *spec = argv[++i];
            char *eq = strchr(spec, '=');
            if (eq == NULL || eq == spec || eq[1] == '\0') {
                usage();
                return 2;
            }
            *eq = '\0';
            markers[marker_count++] = (struct marker){spec, eq + 1, -1};
        } else {
            usage();
            return 2;
        }
    }
    if (i >= argc || out_path == NULL || err_path == NULL || timeout_s <= 0) {
        usage();
        return 2;
    }

    int out_pipe[2], err_pipe[2];
    if (pipe(out_pipe) < 0 || pipe(err_pipe) < 0) {
        perror("labwatch: pipe");
        return 2;
    }
    struct stream streams[2];
    if (open_capture(&streams[0], out_path, out_pipe[0]) < 0 ||
        open_capture(&streams[1], err_path, err_pipe[0]) < 0) {
        return 2;
    }

    double start = now_ms();
    pid_t pid = fork();
    if (pid < 0) {
        perror("labwatch: fork");
        return 2;
    }
    if (pid == 0) {
        setpgid(0, 0);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0) {
            dup2(null_fd, 0);
        }
        dup2(out_pipe[1], 1);
        dup2(err_pipe[1], 2);
        close(out_pipe[0]);
        close(out_pipe[1]);
        close(err_pipe[0]);
        close(err_pipe[1]);
        execvp(argv[i], argv + i);
        fprintf(stderr, "labwatch: exec %s: %s\n", argv[i], strerror(errno));
        _exit(127);
    }
    setpgid(pid, pid);
    close(out_pipe[1]);
    close(err_pipe[1]);

    int timed_out = 0;
    char buf[65536];
    while (streams[0].fd >= 0 || streams[1].fd >= 0) {
        double left_ms = timeout_s * 1e3 - (now_ms() - start);
        if (left_ms <= 0) {
            timed_out = 1;
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            break;
        }
        struct pollfd fds[2];
        for (int k = 0; k < 2; k++) {
            fds[k] = (struct pollfd){streams[k].fd, POLLIN, 0};
        }
        int wait_ms = left_ms > 500 ? 500 : (int)left_ms + 1;
        int ready = poll(fds, 2, wait_ms);
        if (ready < 0) {
            if (errno == EINTR) {
                continue;
            }
            perror("labwatch: poll");
            break;
        }
        for (int k = 0; k < 2; k++) {
            if (streams[k].fd < 0 || fds[k].revents == 0) {
                continue;
            }
            ssize_t n = read(streams[k].fd, buf, sizeof buf);
            if (n > 0) {
                take_chunk(&streams[k], buf, (size_t)n, now_ms() - start);
            } else if (n == 0 || errno != EINTR) {
                close(streams[k].fd);
                streams[k].fd = -1;
            }
        }
    }
    // A VMM that closed its output but keeps running still gets the deadline.
    int status = 0;
    struct rusage usage_info;
    memset(&usage_info, 0, sizeof usage_info);
    for (;;) {
        pid_t r = wait4(pid, &status, timed_out ? 0 : WNOHANG, &usage_info);
        if (r == pid || (r < 0 && errno != EINTR)) {
            break;
        }
        if (r == 0) {
            if (timeout_s * 1e3 - (now_ms() - start) <= 0) {
                timed_out = 1;
                kill(-pid, SIGKILL);
                kill(pid, SIGKILL);
            } else {
                usleep(20000);
            }
        }
    }
    double wall = now_ms() - start;
    for (int k = 0; k < 2; k++) {
        if (streams[k].len > 0) {
            match_line(&streams[k], wall);
        }
        fclose(streams[k].out);
    }
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    printf("LABWATCH rc=%d timedout=%d wall_ms=%.1f maxrss_kib=%ld user_ms=%ld sys_ms=%ld",
           rc, timed_out, wall, usage_info.ru_maxrss,
           usage_info.ru_utime.tv_sec * 1000 + usage_info.ru_utime.tv_usec / 1000,
           usage_info.ru_stime.tv_sec * 1000 + usage_info.ru_stime.tv_usec / 1000);
    for (int m = 0; m < marker_count; m++) {
        printf(" %s_ms=%.1f", markers[m].name, markers[m].at_ms);
    }
    printf("\n");
    return 0;
}
