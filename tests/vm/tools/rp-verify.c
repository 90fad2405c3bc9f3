// SPDX-License-Identifier: GPL-2.0
/*
 * rp-verify: checks devices against rp-writer logs.
 *
 *   rp-verify --dev PATH [--misalign B] [--crashed] LOG...
 *       For every 4 KiB block, the last acknowledged write in the logs (files
 *       in the order given, lines in file order; later supersedes earlier)
 *       must be what the device holds. Blocks whose last write failed are
 *       indeterminate and only counted. Prints
 *       "verify: blocks=N ok=N bad=M unknown=K"; exit 1 if bad > 0.
 *       --crashed: the logs were written by rp-writer --log-sync and the
 *       machine crashed during the writes. A log then ends at its last whole
 *       line (a torn last line, or zeros, are dropped), and each log (one
 *       writer thread, which alone writes its blocks, one write at a time)
 *       may have one write beyond it: in flight at the crash, or acknowledged
 *       just before the crash but not yet logged. That write has the log's
 *       next generation. So a block whose last logged write came from log L
 *       holds that write, or else the write (seed of L, last generation of
 *       L + 1) at this block; nothing else. Adds "inflight=J" (blocks that
 *       hold the unlogged write) and "torn=T" (dropped partial lines).
 *       --misalign B: read into a buffer B bytes past a page boundary, as an
 *       application whose O_DIRECT buffer is only as aligned as the device
 *       demands (sd: 64 bytes) does.
 *   rp-verify --regions KIB LOG...
 *       Prints the regions of KIB KiB that acknowledged writes touched:
 *       "regions: count=N" then one "FIRST-LAST" line (inclusive) per range.
 *   rp-verify --cmp A B [--offset B] [--length B] [--region-kib KIB]
 *       Byte-compares two devices (O_DIRECT): "cmp: identical bytes=N" or
 *       "cmp: differ first=OFF blocks=K bytes=N" (K differing 4 KiB blocks);
 *       with --region-kib, then one "FIRST-LAST" line per range of regions
 *       (of KIB KiB, counted from offset 0) that differ. Exit 1 if they differ.
 *   rp-verify --dump DEV [--offset B] [--length B]
 *       Copies the bytes of DEV (O_DIRECT, in whole logical blocks; default
 *       all of it from --offset) to stdout, then "dump: bytes=N" to stderr.
 *       busybox dd's iflag=direct falls back to the page cache when its
 *       buffer is not aligned (it never is), and the kernel module writes
 *       the legs behind that cache: scenarios read devices with this.
 *
 * Exit 2 on I/O or log errors, 64 on usage errors.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rp-pattern.h"

#define RP_READ_CHUNK (1u << 20)
#define RP_MAX_REPORTED 10

enum block_state { BLOCK_UNWRITTEN, BLOCK_ACKED, BLOCK_FAILED };

struct block_expect {
	uint64_t seed;
	uint64_t gen;
	uint64_t next_gen;	/* --crashed: the unlogged write of its log, 0 = none */
	uint8_t state;
};

struct log_record {
	bool acked;
	uint64_t seed, gen, offset, length, checksum;
	size_t log;		/* index of the log file, in the order given */
};

struct record_list {
	struct log_record *items;
	size_t count, cap;
};

static void usage(void)
{
	fprintf(stderr,
		"usage: rp-verify --dev PATH [--misalign B] [--crashed] LOG...\n"
		"       rp-verify --regions KIB LOG...\n"
		"       rp-verify --cmp A B [--offset B] [--length B] [--region-kib KIB]\n"
		"       rp-verify --dump DEV [--offset B] [--length B]\n");
	exit(64);
}

static void die(const char *what, const char *path)
{
	fprintf(stderr, "rp-verify: %s %s: %s\n", what, path, strerror(errno));
	exit(2);
}

static void *xmalloc_aligned(size_t size)
{
	void *p;

	if (posix_memalign(&p, RP_BLOCK, size)) {
		fprintf(stderr, "rp-verify: out of memory\n");
		exit(2);
	}
	return p;
}

static bool crashed;		/* --crashed */
static uint64_t torn_lines;

/* Reads one log; log_index goes into its records. With --crashed the log ends
 * at the first line that is not whole (no newline: the write() of that record
 * did not finish) or that starts with a NUL (space the file system allocated
 * but whose data never reached the disk). */
static void read_log(const char *path, size_t log_index, struct record_list *list)
{
	FILE *f = fopen(path, "r");
	char line[512];
	unsigned int lineno = 0;

	if (!f)
		die("open log", path);
	while (fgets(line, sizeof(line), f)) {
		struct log_record r = { .log = log_index };
		char kind;
		unsigned long long last;
		int n;

		lineno++;
		if (crashed && (!line[0] || !strchr(line, '\n'))) {
			torn_lines++;
			break;
		}
		if (line[0] == '#' || line[0] == '\n')
			continue;
		n = sscanf(line, "%c %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64 " %llx",
			   &kind, &r.seed, &r.gen, &r.offset, &r.length, &last);
		if (n != 6 || (kind != 'A' && kind != 'F') ||
		    r.offset % RP_BLOCK || r.length % RP_BLOCK || !r.length) {
			fprintf(stderr, "rp-verify: %s:%u: malformed record\n", path, lineno);
			exit(2);
		}
		r.acked = kind == 'A';
		r.checksum = last;	/* for F records the errno: not used */
		if (list->count == list->cap) {
			list->cap = list->cap ? 2 * list->cap : 1024;
			list->items = realloc(list->items, list->cap * sizeof(*list->items));
			if (!list->items) {
				fprintf(stderr, "rp-verify: out of memory\n");
				exit(2);
			}
		}
		list->items[list->count++] = r;
	}
	if (ferror(f))
		die("read log", path);
	fclose(f);
}

static struct record_list read_logs(int nlogs, char **logs)
{
	struct record_list list = { 0 };
	int i;

	if (nlogs < 1)
		usage();
	for (i = 0; i < nlogs; i++)
		read_log(logs[i], i, &list);
	return list;
}

/* The log's checksum must match the regenerated data: catches a pattern or log bug. */
static void check_record(const struct log_record *r, void *buf)
{
	uint64_t h = RP_CHECKSUM_INIT, i;

	for (i = 0; i < r->length / RP_BLOCK; i++) {
		rp_fill_block(buf, r->seed, r->gen, r->offset + i * RP_BLOCK);
		h = rp_checksum(h, buf, RP_BLOCK);
	}
	if (h != r->checksum) {
		fprintf(stderr, "rp-verify: log record seed=%" PRIu64 " gen=%" PRIu64
			" offset=%" PRIu64 ": checksum mismatch (log damaged?)\n",
			r->seed, r->gen, r->offset);
		exit(2);
	}
}

static void describe_bad(uint64_t off, const struct block_expect *want,
			 const unsigned char *got)
{
	struct rp_block_hdr hdr;
	size_t i;

	memcpy(&hdr, got, sizeof(hdr));
	printf("bad block offset=%" PRIu64 " expected seed=%" PRIu64 " gen=%" PRIu64,
	       off, want->seed, want->gen);
	if (hdr.magic == RP_MAGIC) {
		printf(" found seed=%" PRIu64 " gen=%" PRIu64 " offset=%" PRIu64 "%s\n",
		       hdr.seed, hdr.gen, hdr.offset,
		       hdr.seed == want->seed && hdr.gen == want->gen &&
		       hdr.offset == off ? " (header ok, payload differs)" : "");
		return;
	}
	for (i = 0; i < RP_BLOCK && !got[i]; i++)
		;
	if (i == RP_BLOCK)
		printf(" found zeros\n");
	else
		printf(" found foreign data %02x%02x%02x%02x%02x%02x%02x%02x...\n",
		       got[0], got[1], got[2], got[3], got[4], got[5], got[6], got[7]);
}

static int cmd_verify(const char *dev, int nlogs, char **logs)
{
	struct record_list list;
	uint64_t lo = UINT64_MAX, hi = 0, nblocks, b, i;
	uint64_t total = 0, ok = 0, bad = 0, unknown = 0, inflight = 0;
	uint64_t *last_gen;
	struct block_expect *expect;
	unsigned char *buf, *want = xmalloc_aligned(RP_BLOCK);
	unsigned long misalign = 0;
	int fd;

	if (nlogs >= 2 && !strcmp(logs[0], "--misalign")) {
		char *end;

		misalign = strtoul(logs[1], &end, 0);
		if (*end || !*logs[1] || misalign >= RP_BLOCK)
			usage();
		nlogs -= 2;
		logs += 2;
	}
	buf = (unsigned char *)xmalloc_aligned(RP_READ_CHUNK + RP_BLOCK) +
	      misalign;
	if (nlogs >= 1 && !strcmp(logs[0], "--crashed")) {
		crashed = true;
		nlogs--;
		logs++;
	}
	list = read_logs(nlogs, logs);
	/* per log: the last generation it logged (acknowledged or failed) */
	last_gen = calloc(nlogs, sizeof(*last_gen));
	if (!last_gen) {
		fprintf(stderr, "rp-verify: out of memory\n");
		return 2;
	}
	for (i = 0; i < list.count; i++)
		if (list.items[i].gen > last_gen[list.items[i].log])
			last_gen[list.items[i].log] = list.items[i].gen;

	for (i = 0; i < list.count; i++) {
		const struct log_record *r = &list.items[i];

		if (r->offset / RP_BLOCK < lo)
			lo = r->offset / RP_BLOCK;
		if ((r->offset + r->length) / RP_BLOCK > hi)
			hi = (r->offset + r->length) / RP_BLOCK;
	}
	if (!list.count) {
		printf("verify: blocks=0 ok=0 bad=0 unknown=0%s\n",
		       crashed ? " inflight=0" : "");
		return 0;
	}
	nblocks = hi - lo;
	expect = calloc(nblocks, sizeof(*expect));
	if (!expect) {
		fprintf(stderr, "rp-verify: out of memory\n");
		return 2;
	}
	for (i = 0; i < list.count; i++) {
		const struct log_record *r = &list.items[i];
		uint64_t first = r->offset / RP_BLOCK - lo;

		if (r->acked)
			check_record(r, want);
		for (b = first; b < first + r->length / RP_BLOCK; b++) {
			expect[b].seed = r->seed;
			expect[b].gen = r->gen;
			expect[b].next_gen = crashed ? last_gen[r->log] + 1 : 0;
			expect[b].state = r->acked ? BLOCK_ACKED : BLOCK_FAILED;
		}
	}

	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0)
		die("open", dev);
	for (b = 0; b < nblocks; ) {
		uint64_t run = 0, chunk_blocks = RP_READ_CHUNK / RP_BLOCK;
		ssize_t got;

		if (expect[b].state != BLOCK_ACKED) {
			unknown += expect[b].state == BLOCK_FAILED;
			b++;
			continue;
		}
		while (b + run < nblocks && run < chunk_blocks &&
		       expect[b + run].state == BLOCK_ACKED)
			run++;
		got = pread(fd, buf, run * RP_BLOCK, (lo + b) * RP_BLOCK);
		if (got < 0)
			die("read", dev);
		if ((uint64_t)got != run * RP_BLOCK) {
			fprintf(stderr, "rp-verify: short read of %s at %" PRIu64 "\n",
				dev, (lo + b) * RP_BLOCK);
			return 2;
		}
		for (i = 0; i < run; i++) {
			uint64_t off = (lo + b + i) * RP_BLOCK;

			total++;
			rp_fill_block(want, expect[b + i].seed, expect[b + i].gen, off);
			if (!memcmp(want, buf + i * RP_BLOCK, RP_BLOCK)) {
				ok++;
				continue;
			}
			if (expect[b + i].next_gen) {
				rp_fill_block(want, expect[b + i].seed,
					      expect[b + i].next_gen, off);
				if (!memcmp(want, buf + i * RP_BLOCK, RP_BLOCK)) {
					ok++;
					inflight++;
					continue;
				}
			}
			if (bad++ < RP_MAX_REPORTED)
				describe_bad(off, &expect[b + i], buf + i * RP_BLOCK);
		}
		b += run;
	}
	close(fd);
	printf("verify: blocks=%" PRIu64 " ok=%" PRIu64 " bad=%" PRIu64
	       " unknown=%" PRIu64, total, ok, bad, unknown);
	if (crashed)
		printf(" inflight=%" PRIu64 " torn=%" PRIu64, inflight, torn_lines);
	printf("\n");
	return bad ? 1 : 0;
}

/* Prints one "FIRST-LAST" line per run of set entries of flags[0..n). */
static void print_ranges(const unsigned char *flags, uint64_t n)
{
	uint64_t r, end;

	for (r = 0; r < n; r = end + 1) {
		end = r;
		if (!flags[r])
			continue;
		while (end + 1 < n && flags[end + 1])
			end++;
		printf("%" PRIu64 "-%" PRIu64 "\n", r, end);
	}
}

static int cmd_regions(const char *kib_arg, int nlogs, char **logs)
{
	struct record_list list = read_logs(nlogs, logs);
	uint64_t region, max_region = 0, i, r, count = 0;
	unsigned char *touched;

	if (rp_parse_size(kib_arg, &region) || !region)
		usage();
	region *= 1024;
	for (i = 0; i < list.count; i++)
		if (list.items[i].acked &&
		    (list.items[i].offset + list.items[i].length - 1) / region + 1 > max_region)
			max_region = (list.items[i].offset + list.items[i].length - 1) / region + 1;
	touched = calloc(max_region + 1, 1);
	if (!touched) {
		fprintf(stderr, "rp-verify: out of memory\n");
		return 2;
	}
	for (i = 0; i < list.count; i++) {
		const struct log_record *rec = &list.items[i];

		if (!rec->acked)
			continue;
		for (r = rec->offset / region;
		     r <= (rec->offset + rec->length - 1) / region; r++)
			touched[r] = 1;
	}
	for (r = 0; r < max_region; r++)
		count += touched[r];
	printf("regions: count=%" PRIu64 "\n", count);
	print_ranges(touched, max_region);
	return 0;
}

static uint64_t open_size(const char *path, int *fd)
{
	struct stat st;
	uint64_t size;

	*fd = open(path, O_RDONLY | O_DIRECT);
	if (*fd < 0 || fstat(*fd, &st))
		die("open", path);
	if (!S_ISBLK(st.st_mode))
		return st.st_size;
	if (ioctl(*fd, BLKGETSIZE64, &size))
		die("BLKGETSIZE64", path);
	return size;
}

/*
 * The "--offset B --length B [--region-kib KIB]" pairs of argv (region_kib
 * NULL: not taken); anything else is a usage error.
 */
static void parse_range(int argc, char **argv, uint64_t *offset,
			uint64_t *length, uint64_t *region_kib)
{
	int i;

	for (i = 0; i < argc; i += 2) {
		uint64_t *dst = !strcmp(argv[i], "--offset") ? offset :
				!strcmp(argv[i], "--length") ? length :
				!strcmp(argv[i], "--region-kib") ? region_kib : NULL;

		if (!dst || i + 1 >= argc || rp_parse_size(argv[i + 1], dst))
			usage();
	}
}

static int cmd_cmp(int argc, char **argv)
{
	uint64_t offset = 0, length = 0, region_kib = 0, size_a, size_b, pos;
	uint64_t diff_blocks = 0, first_diff = UINT64_MAX, nregions = 0;
	unsigned char *differs = NULL;
	unsigned char *a_buf = xmalloc_aligned(RP_READ_CHUNK);
	unsigned char *b_buf = xmalloc_aligned(RP_READ_CHUNK);
	int fd_a, fd_b;

	if (argc < 2)
		usage();
	parse_range(argc - 2, argv + 2, &offset, &length, &region_kib);
	size_a = open_size(argv[0], &fd_a);
	size_b = open_size(argv[1], &fd_b);
	if (!length) {
		length = size_a < size_b ? size_a : size_b;
		length = length > offset ? length - offset : 0;
	}
	if (offset % RP_BLOCK || length % RP_BLOCK ||
	    offset + length > size_a || offset + length > size_b) {
		fprintf(stderr, "rp-verify: range %" PRIu64 "+%" PRIu64
			" not 4 KiB aligned or past the end (%" PRIu64 ", %" PRIu64 ")\n",
			offset, length, size_a, size_b);
		return 2;
	}
	if (region_kib) {
		nregions = (offset + length + region_kib * 1024 - 1) / (region_kib * 1024);
		differs = calloc(nregions, 1);
		if (!differs) {
			fprintf(stderr, "rp-verify: out of memory\n");
			return 2;
		}
	}
	for (pos = offset; pos < offset + length; ) {
		uint64_t n = offset + length - pos, b;

		if (n > RP_READ_CHUNK)
			n = RP_READ_CHUNK;
		if (pread(fd_a, a_buf, n, pos) != (ssize_t)n)
			die("read", argv[0]);
		if (pread(fd_b, b_buf, n, pos) != (ssize_t)n)
			die("read", argv[1]);
		for (b = 0; b < n; b += RP_BLOCK) {
			size_t k;

			if (!memcmp(a_buf + b, b_buf + b, RP_BLOCK))
				continue;
			if (first_diff == UINT64_MAX) {
				for (k = 0; a_buf[b + k] == b_buf[b + k]; k++)
					;
				first_diff = pos + b + k;
			}
			diff_blocks++;
			if (differs)
				differs[(pos + b) / (region_kib * 1024)] = 1;
		}
		pos += n;
	}
	close(fd_a);
	close(fd_b);
	if (!diff_blocks) {
		printf("cmp: identical bytes=%" PRIu64 "\n", length);
		return 0;
	}
	printf("cmp: differ first=%" PRIu64 " blocks=%" PRIu64 " bytes=%" PRIu64 "\n",
	       first_diff, diff_blocks, length);
	if (differs)
		print_ranges(differs, nregions);
	return 1;
}

static int cmd_dump(int argc, char **argv)
{
	unsigned char *buf = xmalloc_aligned(RP_READ_CHUNK);
	uint64_t offset = 0, length = 0, size, pos;
	int fd, lbs = 512;

	if (argc < 1)
		usage();
	parse_range(argc - 1, argv + 1, &offset, &length, NULL);
	size = open_size(argv[0], &fd);
	if (ioctl(fd, BLKSSZGET, &lbs) || lbs <= 0)
		lbs = 512;
	if (!length)
		length = size > offset ? size - offset : 0;
	if (offset % lbs || length % lbs || offset + length > size) {
		fprintf(stderr, "rp-verify: range %" PRIu64 "+%" PRIu64
			" not in whole %d-byte blocks or past the end (%" PRIu64 ")\n",
			offset, length, lbs, size);
		return 2;
	}
	for (pos = offset; pos < offset + length; ) {
		uint64_t n = offset + length - pos, w;

		if (n > RP_READ_CHUNK)
			n = RP_READ_CHUNK;
		if (pread(fd, buf, n, pos) != (ssize_t)n)
			die("read", argv[0]);
		for (w = 0; w < n; ) {
			ssize_t k = write(STDOUT_FILENO, buf + w, n - w);

			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				die("write", "stdout");
			w += k;
		}
		pos += n;
	}
	close(fd);
	fprintf(stderr, "dump: bytes=%" PRIu64 "\n", length);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 3 && !strcmp(argv[1], "--dev"))
		return cmd_verify(argv[2], argc - 3, argv + 3);
	if (argc >= 3 && !strcmp(argv[1], "--regions"))
		return cmd_regions(argv[2], argc - 3, argv + 3);
	if (argc >= 2 && !strcmp(argv[1], "--cmp"))
		return cmd_cmp(argc - 2, argv + 2);
	if (argc >= 3 && !strcmp(argv[1], "--dump"))
		return cmd_dump(argc - 2, argv + 2);
	usage();
}
