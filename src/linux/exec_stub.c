/* tinyrt's exec trampoline (see exec_stub.rs): the container's init, or a process of
 * `tinyrt exec`, executes this sealed memfd copy instead of the program, and it executes the
 * program. From then on /proc/self/exe of anything in the container is this stub, never the
 * runtime's binary on the host (CVE-2019-5736), without re-executing tinyrt on every call.
 *
 *   argv: "tinyrt-exec" ERRFD PATH ARGV0 ARGV1 ...     (the environment is passed through)
 *
 * ERRFD is marked close-on-exec, so its reader sees EOF once PATH runs. If execve fails, one
 * JSON message {"Error":{"what":...,"errno":N}} (the runtime's channel format) is written to
 * it and the stub exits 127. Built by build.rs: gcc -nostdlib -static, x86_64 Linux only. */

static long sys3(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c) : "rcx", "r11", "memory");
    return r;
}

#define SYS_write 1
#define SYS_fcntl 72
#define SYS_execve 59
#define SYS_exit_group 231

static char buf[8192];

static int put(int n, const char *s, int escape)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s && n < (int)sizeof(buf) - 16; s++) {
        unsigned char c = (unsigned char)*s;
        if (escape && (c == '"' || c == '\\')) {
            buf[n++] = '\\';
            buf[n++] = (char)c;
        } else if (escape && c < 0x20) {
            buf[n++] = '\\';
            buf[n++] = 'u';
            buf[n++] = '0';
            buf[n++] = '0';
            buf[n++] = hex[c >> 4];
            buf[n++] = hex[c & 15];
        } else {
            buf[n++] = (char)c;
        }
    }
    return n;
}

static int put_num(int n, long v)
{
    char d[24];
    int i = 0;
    do {
        d[i++] = (char)('0' + v % 10);
        v /= 10;
    } while (v > 0 && i < 20);
    while (i > 0)
        buf[n++] = d[--i];
    return n;
}

__attribute__((used, noreturn)) void stub_main(long *sp)
{
    long argc = sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    long fd = 0;
    char *p;
    /* Anything but the runtime's own call (e.g. a script naming /proc/self/exe as its
     * interpreter) gets nothing done. */
    if (argc < 4 || !argv[1][0])
        sys3(SYS_exit_group, 126, 0, 0);
    for (p = argv[1]; *p; p++) {
        if (*p < '0' || *p > '9' || fd > 1000000)
            sys3(SYS_exit_group, 126, 0, 0);
        fd = fd * 10 + (*p - '0');
    }
    sys3(SYS_fcntl, fd, 2 /* F_SETFD */, 1 /* FD_CLOEXEC */);
    long r = sys3(SYS_execve, (long)argv[2], (long)(argv + 3), (long)envp);
    int n = put(0, "{\"Error\":{\"what\":\"process.args[0]: exec \\\"", 0);
    n = put(n, argv[2], 1);
    n = put(n, "\\\"\",\"errno\":", 0);
    n = put_num(n, -r);
    n = put(n, "}}", 0);
    sys3(SYS_write, fd, (long)buf, n);
    sys3(SYS_exit_group, 127, 0, 0);
    for (;;) {
    }
}

__asm__(".globl _start\n"
        "_start:\n"
        "  mov %rsp, %rdi\n"
        "  and $-16, %rsp\n"
        "  call stub_main\n"
        "  hlt\n");
