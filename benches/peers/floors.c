/* Lower bounds for the peer benchmark, as one small C program (no interpreter start-up
 * in the measurement):
 *
 *   floors stat DIR     lstat every file and directory under DIR once (nftw, FTW_PHYS);
 *                       the least a no-op build that checks every file must do.
 *   floors spawn N J    run /bin/true N times, at most J at a time (posix_spawn, wait);
 *                       the least a cold build of N commands at -j J must do.
 *   floors run FILE CMD...
 *                       the launcher for every timed build: runs CMD, waits for it with
 *                       wait4 and writes "SECONDS MAXRSS_KIB" into FILE, exiting with
 *                       CMD's status. A process keeps its peak RSS across exec, so a
 *                       child forked straight from the Python harness would report the
 *                       harness' own size; forked from this small program it does not.
 *
 * Prints the count on stdout; exits non-zero on any error.
 */
#define _GNU_SOURCE /* wait4, nftw */
#include <ftw.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static long seen;

static int visit(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)path; (void)st; (void)ftw;
    if (flag == FTW_NS || flag == FTW_DNR) return 1;
    seen++;
    return 0;
}

static int spawn_true(long n, long jobs) {
    char *argv[] = {"true", NULL};
    long started = 0, running = 0;
    while (started < n || running > 0) {
        while (started < n && running < jobs) {
            pid_t pid;
            if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0) {
                perror("posix_spawn /bin/true");
                return 1;
            }
            started++;
            running++;
        }
        int status;
        if (wait(&status) < 0) { perror("wait"); return 1; }
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            fprintf(stderr, "/bin/true failed\n");
            return 1;
        }
        running--;
    }
    printf("%ld\n", started);
    return 0;
}

static int run(const char *file, char **argv) {
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid;
    if (posix_spawnp(&pid, argv[0], NULL, NULL, argv, environ) != 0) {
        perror(argv[0]);
        return 127;
    }
    int status;
    struct rusage ru;
    if (wait4(pid, &status, 0, &ru) < 0) { perror("wait4"); return 1; }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double seconds = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
    FILE *f = fopen(file, "w");
    if (!f || fprintf(f, "%.9f %ld\n", seconds, ru.ru_maxrss) < 0 || fclose(f) != 0) {
        perror(file);
        return 1;
    }
    if (WIFEXITED(status)) return WEXITSTATUS(status);
    return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

int main(int argc, char **argv) {
    if (argc >= 4 && strcmp(argv[1], "run") == 0) return run(argv[2], argv + 3);
    if (argc == 3 && strcmp(argv[1], "stat") == 0) {
        if (nftw(argv[2], visit, 64, FTW_PHYS) != 0) { perror(argv[2]); return 1; }
        printf("%ld\n", seen);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "spawn") == 0) {
        long n = atol(argv[2]), jobs = atol(argv[3]);
        if (n < 0 || jobs < 1) { fprintf(stderr, "floors: bad N or J\n"); return 2; }
        return spawn_true(n, jobs);
    }
    fprintf(stderr, "usage: floors stat DIR | floors spawn N J | floors run FILE CMD...\n");
    return 2;
}
