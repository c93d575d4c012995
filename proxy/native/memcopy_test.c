/*
 * Checks memcopy.c against a byte-by-byte reference: every length up to
 * past each of its limits (4, 8, 16, 32, 64, 128, 256, 2048 bytes) at
 * several alignments of either buffer, bytes around the destination left
 * alone, and overlapping moves in both directions. Run by
 * proxy/tests/memcopy.rs; prints the first mismatch and exits 1.
 */
#include <stdio.h>
#include <stdlib.h>
#include "memcopy.c"

static int failures;

static void fill(byte *p, size_t n, unsigned seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (byte)(i * 131u + seed);
}

static void reference_move(byte *d, const byte *s, size_t n)
{
    if (d < s)
        for (size_t i = 0; i < n; i++) d[i] = s[i];
    else
        for (size_t i = n; i > 0; i--) d[i - 1] = s[i - 1];
}

static void check(const char *what, size_t n, size_t a, size_t b, const byte *got, const byte *want, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (got[i] != want[i]) {
            if (failures++ < 10)
                fprintf(stderr, "%s n=%zu (%zu,%zu): byte %zu is %u, want %u\n", what, n, a, b, i, got[i], want[i]);
            return;
        }
    }
}

static size_t next_length(size_t n)
{
    if (n < 300) return n + 1;
    if (n < 2200) return n + 7;
    if (n < 70000) return n * 2 + 1;
    return 0;
}

int main(void)
{
    static const size_t offsets[][2] = {{0, 0}, {1, 0}, {0, 3}, {7, 9}, {15, 1}, {8, 8}, {33, 17}};
    static const size_t shifts[] = {1, 2, 7, 15, 16, 17, 63, 64, 65, 255, 256, 300, 2049};
    size_t checked = 0;
    for (size_t n = 0; n != 0 || checked == 0; n = next_length(n)) {
        size_t room = n + 4200;
        byte *src = malloc(room), *dst = malloc(room), *want = malloc(room), *buf = malloc(room);
        if (!src || !dst || !want || !buf) { fprintf(stderr, "out of memory\n"); return 2; }
        for (size_t k = 0; k < sizeof offsets / sizeof offsets[0]; k++) {
            size_t so = offsets[k][0], dof = offsets[k][1];
            fill(src, room, 7);
            fill(dst, room, 99);
            fill(want, room, 99);
            reference_move(want + dof, src + so, n);
            if (grpc_balancer_memcpy(dst + dof, src + so, n) != dst + dof) failures++;
            check("memcpy", n, so, dof, dst, want, n + 64);
            fill(dst, room, 99);
            if (grpc_balancer_memmove(dst + dof, src + so, n) != dst + dof) failures++;
            check("memmove", n, so, dof, dst, want, n + 64);
            checked++;
        }
        for (size_t k = 0; k < sizeof shifts / sizeof shifts[0]; k++) {
            for (int up = 0; up < 2; up++) {
                size_t from = up ? 8 : 8 + shifts[k], to = up ? 8 + shifts[k] : 8;
                fill(buf, room, 3);
                fill(want, room, 3);
                reference_move(want + to, want + from, n);
                if (grpc_balancer_memmove(buf + to, buf + from, n) != buf + to) failures++;
                check(up ? "memmove up" : "memmove down", n, from, to, buf, want, room);
                checked++;
            }
        }
        free(src); free(dst); free(want); free(buf);
    }
    if (failures) {
        fprintf(stderr, "%d of %zu copies wrong\n", failures, checked);
        return 1;
    }
    printf("%zu copies right\n", checked);
    return 0;
}
