// SPDX-License-Identifier: GPL-2.0
/*
 * rp-sg-read: one SCSI READ(10) of BLOCKS logical blocks (default 1, at
 * most 8; 0 is a READ of nothing) through SG_IO with a buffer of BYTES,
 * fewer or more than those blocks, as an initiator whose
 * expected transfer length differs from what its CDB asks for sends it.
 * LIO moves the smaller of the two (a residual either way); a fabric that
 * passes the initiator's buffer on (tcm_loop) refuses fewer, and hands the
 * backend the whole buffer when it is more.
 *
 *   rp-sg-read DEV LBA BYTES [BLOCKS]
 *
 * Reads the blocks with O_DIRECT first, then sends the READ with a buffer
 * of BYTES filled with 0xa5. Prints "sg-read: status=S host=H driver=D
 * resid=R same=Y|N rest=Y|N" and exits 0 when the command ended GOOD, its
 * first min(BYTES, BLOCKS * block) bytes are the blocks', and the rest of
 * the buffer still holds 0xa5 (nothing past the CDB's blocks was read into
 * it); 1 otherwise; 64 on usage errors.
 */
#define _GNU_SOURCE /* O_DIRECT */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <scsi/sg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

static unsigned long long parse(const char *what, const char *s)
{
	unsigned long long v;
	char *end;

	v = strtoull(s, &end, 0);
	if (*end || !*s) {
		fprintf(stderr, "rp-sg-read: bad %s '%s'\n", what, s);
		exit(64);
	}
	return v;
}

int main(int argc, char **argv)
{
	unsigned char cdb[10] = {0x28}, sense[32] = {0};
	unsigned long long lba, bytes, head, tail, blocks = 1;
	unsigned char *block, *buf;
	struct sg_io_hdr io;
	int fd, bs = 0, i;
	bool same, rest;

	if (argc != 4 && argc != 5) {
		fprintf(stderr, "usage: rp-sg-read DEV LBA BYTES [BLOCKS]\n");
		return 64;
	}
	lba = parse("LBA", argv[2]);
	bytes = parse("BYTES", argv[3]);
	if (argc == 5)
		blocks = parse("BLOCKS", argv[4]);
	fd = open(argv[1], O_RDONLY | O_DIRECT);
	if (fd < 0 || ioctl(fd, BLKSSZGET, &bs) < 0 || bs <= 0) {
		fprintf(stderr, "rp-sg-read: %s: %s\n", argv[1],
		        strerror(errno));
		return 1;
	}
	if (!bytes || bytes > 1 << 20 || lba > UINT32_MAX || blocks > 8) {
		fprintf(stderr, "rp-sg-read: BYTES must be 1..1 MiB, LBA < "
		                "2^32, BLOCKS 0..8\n");
		return 64;
	}
	if (posix_memalign((void **)&block, 4096, 8 * bs) ||
	    !(buf = malloc(bytes))) {
		fprintf(stderr, "rp-sg-read: no memory\n");
		return 1;
	}
	if (blocks && pread(fd, block, blocks * bs, (off_t)(lba * bs)) !=
	                      (ssize_t)(blocks * bs)) {
		fprintf(stderr, "rp-sg-read: read LBA %llu of %s: %s\n", lba,
		        argv[1], strerror(errno));
		return 1;
	}
	memset(buf, 0xa5, bytes);
	for (i = 0; i < 4; i++)
		cdb[2 + i] = lba >> (24 - 8 * i);
	cdb[8] = blocks; /* TRANSFER LENGTH */

	memset(&io, 0, sizeof(io));
	io.interface_id = 'S';
	io.dxfer_direction = SG_DXFER_FROM_DEV;
	io.cmd_len = sizeof(cdb);
	io.cmdp = cdb;
	io.mx_sb_len = sizeof(sense);
	io.sbp = sense;
	io.dxfer_len = bytes;
	io.dxferp = buf;
	io.timeout = 60000; /* ms */
	if (ioctl(fd, SG_IO, &io) < 0) {
		fprintf(stderr, "rp-sg-read: SG_IO on %s: %s\n", argv[1],
		        strerror(errno));
		return 1;
	}
	head = blocks * bs;
	if (head > bytes)
		head = bytes;
	same = !memcmp(buf, block, head);
	for (rest = true, tail = head; tail < bytes; tail++)
		rest = rest && buf[tail] == 0xa5;
	printf("sg-read: status=%d host=%d driver=%d resid=%d same=%s "
	       "rest=%s\n",
	       io.status, io.host_status, io.driver_status, io.resid,
	       same ? "Y" : "N", rest ? "Y" : "N");
	return io.status || io.host_status || (io.driver_status & ~0x08) ||
	       !same || !rest;
}
