/*
 * memcpy and memmove for the proxy's static (musl) build.
 *
 * musl's x86_64 memcpy is `rep movsq` with byte-at-a-time `movsb` for the
 * unaligned head and tail. The HTTP/2 stack moves many frames and request
 * heads of a few dozen to a few hundred bytes per call, and each of those
 * pays the string instruction's start-up: under load, musl's memcpy took
 * about 20 % of the proxy's CPU where glibc's took 9 %. Here copies of up to
 * 256 bytes are done with overlapping SSE2 loads and stores (SSE2 is part of
 * x86_64's baseline), every load before the first store, so they are also
 * correct for overlapping buffers; up to 2 KiB, 64-byte rounds of the
 * same; longer ones `rep movsb`, which processors with ERMS run at full
 * speed once its start-up is paid.
 *
 * Compiled with -ffreestanding -fno-builtin -fno-tree-loop-distribute-patterns
 * so the compiler does not turn the loops below back into calls to memcpy.
 * The functions carry their own names, grpc_balancer_memcpy and
 * grpc_balancer_memmove (memcopy_test.c includes this file and checks them
 * on any x86_64 host); with GRPC_BALANCER_LIBC_NAMES, as build.rs builds
 * them for the static musl binary, they are also memcpy and memmove, which
 * the static link then takes instead of musl's.
 */
#include <stddef.h>
#include <stdint.h>
#include <emmintrin.h>

typedef unsigned char byte;

static inline __m128i load16(const byte *p) { return _mm_loadu_si128((const __m128i *)p); }
static inline void store16(byte *p, __m128i v) { _mm_storeu_si128((__m128i *)p, v); }

static inline uint64_t load8(const byte *p) { uint64_t v; __builtin_memcpy(&v, p, 8); return v; }
static inline void store8(byte *p, uint64_t v) { __builtin_memcpy(p, &v, 8); }
static inline uint32_t load4(const byte *p) { uint32_t v; __builtin_memcpy(&v, p, 4); return v; }
static inline void store4(byte *p, uint32_t v) { __builtin_memcpy(p, &v, 4); }

/* n <= 256; reads everything before writing anything. */
static inline void copy_short(byte *d, const byte *s, size_t n)
{
    if (n <= 16) {
        if (n >= 8) {
            uint64_t a = load8(s), b = load8(s + n - 8);
            store8(d, a);
            store8(d + n - 8, b);
        } else if (n >= 4) {
            uint32_t a = load4(s), b = load4(s + n - 4);
            store4(d, a);
            store4(d + n - 4, b);
        } else if (n > 0) {
            byte a = s[0], b = s[n / 2], c = s[n - 1];
            d[0] = a;
            d[n / 2] = b;
            d[n - 1] = c;
        }
    } else if (n <= 32) {
        __m128i a = load16(s), b = load16(s + n - 16);
        store16(d, a);
        store16(d + n - 16, b);
    } else if (n <= 64) {
        __m128i a = load16(s), b = load16(s + 16);
        __m128i c = load16(s + n - 32), e = load16(s + n - 16);
        store16(d, a);
        store16(d + 16, b);
        store16(d + n - 32, c);
        store16(d + n - 16, e);
    } else if (n <= 128) {
        __m128i a0 = load16(s), a1 = load16(s + 16), a2 = load16(s + 32), a3 = load16(s + 48);
        const byte *t = s + n - 64;
        __m128i b0 = load16(t), b1 = load16(t + 16), b2 = load16(t + 32), b3 = load16(t + 48);
        byte *u = d + n - 64;
        store16(d, a0); store16(d + 16, a1); store16(d + 32, a2); store16(d + 48, a3);
        store16(u, b0); store16(u + 16, b1); store16(u + 32, b2); store16(u + 48, b3);
    } else {
        __m128i a0 = load16(s), a1 = load16(s + 16), a2 = load16(s + 32), a3 = load16(s + 48);
        __m128i a4 = load16(s + 64), a5 = load16(s + 80), a6 = load16(s + 96), a7 = load16(s + 112);
        const byte *t = s + n - 128;
        __m128i b0 = load16(t), b1 = load16(t + 16), b2 = load16(t + 32), b3 = load16(t + 48);
        __m128i b4 = load16(t + 64), b5 = load16(t + 80), b6 = load16(t + 96), b7 = load16(t + 112);
        byte *u = d + n - 128;
        store16(d, a0); store16(d + 16, a1); store16(d + 32, a2); store16(d + 48, a3);
        store16(d + 64, a4); store16(d + 80, a5); store16(d + 96, a6); store16(d + 112, a7);
        store16(u, b0); store16(u + 16, b1); store16(u + 32, b2); store16(u + 48, b3);
        store16(u + 64, b4); store16(u + 80, b5); store16(u + 96, b6); store16(u + 112, b7);
    }
}

/* 256 < n: 64 bytes a round. The last 64 bytes are read before anything
 * is written, and every round reads before it writes, so this is also right
 * when d is below s and the buffers overlap (stores stay below the reads). */
static inline void copy_blocks_forward(byte *d, const byte *s, size_t n)
{
    const byte *t = s + n - 64;
    __m128i t0 = load16(t), t1 = load16(t + 16), t2 = load16(t + 32), t3 = load16(t + 48);
    for (size_t i = 0; i + 64 < n; i += 64) {
        __m128i a0 = load16(s + i), a1 = load16(s + i + 16);
        __m128i a2 = load16(s + i + 32), a3 = load16(s + i + 48);
        store16(d + i, a0);
        store16(d + i + 16, a1);
        store16(d + i + 32, a2);
        store16(d + i + 48, a3);
    }
    byte *u = d + n - 64;
    store16(u, t0); store16(u + 16, t1); store16(u + 32, t2); store16(u + 48, t3);
}

/* Long copies: `rep movsb`, front to back byte by byte as far as the
 * architecture is concerned, so also right when d is below s. */
static inline void copy_forward_long(byte *d, const byte *s, size_t n)
{
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(n) : : "memory");
}

/* Where `rep movsb` starts to beat the vector loop (glibc's threshold for
 * 16-byte vectors). */
#define LONG_COPY 2048

void *grpc_balancer_memcpy(void *restrict dest, const void *restrict src, size_t n)
{
    if (n <= 256)
        copy_short(dest, src, n);
    else if (n <= LONG_COPY)
        copy_blocks_forward(dest, src, n);
    else
        copy_forward_long(dest, src, n);
    return dest;
}

void *grpc_balancer_memmove(void *dest, const void *src, size_t n)
{
    byte *d = dest;
    const byte *s = src;
    if (n <= 256) {
        copy_short(d, s, n);
    } else if ((uintptr_t)d - (uintptr_t)s >= n) {
        /* d below s, or no overlap: a forward copy never reads a byte it wrote. */
        if (n <= LONG_COPY)
            copy_blocks_forward(d, s, n);
        else
            copy_forward_long(d, s, n);
    } else {
        /* d above s and overlapping: back to front in 16-byte blocks. Every
         * block is read before a store can reach it, since stores land above
         * the read; the first 16 bytes are read up front and written last. */
        __m128i head = load16(s);
        size_t i = n;
        while (i > 16) {
            i -= 16;
            store16(d + i, load16(s + i));
        }
        store16(d, head);
    }
    return dest;
}

#ifdef GRPC_BALANCER_LIBC_NAMES
void *memcpy(void *restrict, const void *restrict, size_t) __attribute__((alias("grpc_balancer_memcpy")));
void *memmove(void *, const void *, size_t) __attribute__((alias("grpc_balancer_memmove")));
#endif
