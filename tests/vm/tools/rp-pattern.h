/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rp-pattern.h: the data pattern and write log shared by rp-writer and
 * rp-verify (header only: each .c file in tools/ is its own executable).
 *
 * Every 4 KiB block a writer writes is self-describing and regenerable from
 * (seed, generation, device offset of the block): a 32-byte header
 * {magic, seed, gen, offset} followed by a splitmix64 stream seeded from the
 * three. A verifier needs only the log to know what each block must hold, and
 * a mismatch tells which write (if any) the block holds instead.
 *
 * Log (text, one file per writer thread, in the order of completion):
 *   A <seed> <gen> <offset> <length> <checksum hex>   acknowledged write
 *   F <seed> <gen> <offset> <length> <errno>          failed write
 *   # comment
 * A failed write leaves its blocks indeterminate (the device may hold the old
 * or the new data) until a later acknowledged write covers them.
 */
#ifndef RP_PATTERN_H
#define RP_PATTERN_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define RP_BLOCK 4096u
#define RP_MAGIC 0x31304b4c42575052ull /* "RPWBLK01" */

struct rp_block_hdr {
	uint64_t magic;
	uint64_t seed;
	uint64_t gen;
	uint64_t offset;
};

static inline uint64_t rp_splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* Fills one RP_BLOCK block: the content (seed, gen) has at device offset off.
 */
static inline void rp_fill_block(void *block, uint64_t seed, uint64_t gen,
                                 uint64_t off)
{
	struct rp_block_hdr hdr = {RP_MAGIC, seed, gen, off};
	uint64_t state = seed ^ (gen * 0xd1342543de82ef95ull) ^
	                 (off * 0x9e3779b97f4a7c15ull);
	uint64_t *word = block;
	size_t i;

	memcpy(block, &hdr, sizeof(hdr));
	for (i = sizeof(hdr) / 8; i < RP_BLOCK / 8; i++)
		word[i] = rp_splitmix64(&state);
}

/* 64-bit checksum of len bytes (a multiple of 8), chained through h. */
static inline uint64_t rp_checksum(uint64_t h, const void *data, size_t len)
{
	const uint64_t *word = data;
	size_t i;

	for (i = 0; i < len / 8; i++) {
		h = (h ^ word[i]) * 0x100000001b3ull;
		h ^= h >> 29;
	}
	return h;
}

#define RP_CHECKSUM_INIT 0xcbf29ce484222325ull

/* Parses a size with an optional K/M/G suffix (powers of 1024). */
static inline int rp_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 0);

	switch (*end) {
	case 'k':
	case 'K':
		v <<= 10;
		end++;
		break;
	case 'm':
	case 'M':
		v <<= 20;
		end++;
		break;
	case 'g':
	case 'G':
		v <<= 30;
		end++;
		break;
	default:
		break;
	}
	if (end == s || *end != '\0')
		return -1;
	*out = v;
	return 0;
}

#endif /* RP_PATTERN_H */
