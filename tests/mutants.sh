# shellcheck shell=bash
# The mutants of "make check-mutants" (run by check-mutants.sh).
#
# Each mutant breaks one promise of the product with a minimal source
# change, and names the tests that must notice (fastest first: the run
# stops at the first test that fails).  One line each:
#
#   mutant NAME FILE LINES SED-EXPRESSION PROMISE TEST...
#
# LINES is how many lines the expression must change: an anchor that
# matches nowhere, or more often than that, means the code moved, and
# the mutant fails the suite until it is brought up to date (never
# skipped).  Keep anchors short, on the line that carries the promise.
#
# What only the VM can show (make check-vm) has no mutant here: the
# libzbd backend (plugin/device.c: O_DIRECT bounce buffers, zone
# reports and resets of a real device, the re-read after an I/O error
# on it), dm-crypt reading what the filter wrote, the kernel NBD client,
# and nbdzone attach's ublk device (zone append, the WP re-read after
# an error, the kernel's zone resource errors).

# ---- The write gate (plugin/gate.c) ----------------------------------
mutant gate-runs-ahead plugin/gate.c 1 \
    's/if (e || (offset == z->wp \&\& !z->busy))/if (e || !z->busy)/' \
    "a write ahead of the WP waits for the gap; the device sees writes only at its WP" \
    test-zbd-gate-unit test-zbd-ordering.sh
mutant gate-below-wp-waits plugin/gate.c 1 \
    's/^  if (offset < z->wp) {$/  if (0) {/' \
    "a write below the WP fails at once with EIO and a log line" \
    test-zbd-gate-unit
mutant gate-capacity-off-by-one plugin/gate.c 1 \
    's/offset + n > zone_cap_end (z)) {/offset + n >= zone_cap_end (z)) {/' \
    "a zone takes writes up to its capacity, ENOSPC only past it" \
    test-zbd-gate-unit test-zbd-file.sh test-zbd-profile-memory.sh
mutant gate-timeout-counts-queueing plugin/gate.c 1 \
    's/deadline = before (&arrived, &z->idle_since) ? z->idle_since : arrived;/deadline = arrived;/' \
    "the reorder timeout measures lack of progress, not queueing behind a slow device" \
    test-zbd-gate-unit test-zbd-slow.sh
mutant gate-no-wake plugin/gate.c 1 \
    's/if (all || w->offset <= z->wp)/if (all)/' \
    "a write waiting for its turn is woken as soon as the WP reaches it" \
    test-zbd-gate-unit test-zbd-ordering.sh
mutant gate-capacity-short-last-zone plugin/gate.c 1 \
    's/z->cap != (z->len < cap ? z->len : cap)/z->cap != cap/' \
    "a short last zone does not give every zone its length as capacity" \
    test-zbd-gate-unit
mutant gate-reset-no-wait plugin/gate.c 1 \
    's/^  claim (t, z);$/  z->busy = true; (void) claim;/' \
    "a reset (or finish) waits for the zone's write in flight" \
    test-zbd-gate-unit
mutant gate-busy-zone-stays-open plugin/gate.c 1 \
    's/(pass == 1 || !v->busy)) {/(!v->busy)) {/' \
    "at the open limit a zone with a write in flight is closed too, as a drive does" \
    test-zbd-limits.sh
mutant gate-reopen-at-active-limit plugin/gate.c 1 \
    's/^  if (t->config.max_active \&\& t->nr_active >= t->config.max_active)$/  if (0)/' \
    "with every active slot taken no zone is closed to reopen a closed one (null_blk)" \
    test-zbd-limits.sh
mutant gate-no-requery plugin/gate.c 1 \
    '/^zt_write (/,/^}/s/^    requery_claimed (t, z);$/    (void) 0;/' \
    "after a failed write the zone is re-read from the device" \
    test-zbd-gate-unit

# ---- The plugin (plugin/zbd.c) and the image backend ------------------
mutant plugin-no-align-check plugin/zbd.c 1 \
    's/if ((offset | count) & (bs - 1)) {/if (0) {/' \
    "a misaligned request gets EINVAL and a log line, never a read-modify-write" \
    test-zbd-profile-memory.sh
mutant plugin-fua-ignored plugin/zbd.c 1 \
    's/return NBDKIT_FUA_EMULATE;/return NBDKIT_FUA_NATIVE;/' \
    "a FUA write is durable with its WP when acknowledged" \
    test-zbd-flush-order.sh test-zbd-powercut.sh
mutant plugin-partial-trim-resets plugin/zbd.c 1 \
    's/if (!z->conventional && offset == z->start && zone_end (z) <= end) {/if (!z->conventional) {/' \
    "only a trim of a whole zone resets it; a partial trim is a no-op" \
    test-zbd-profile-memory.sh
mutant image-no-data-sync plugin/emulate.c 1 \
    '/^persist_locked (struct emu/,/^}/s/if (image_sync (e) == -1) {/if (0) {/' \
    "the image's data is durable before the zone table that covers it" \
    test-zbd-flush-order.sh test-zbd-powercut.sh
mutant image-reset-table-late plugin/emulate.c 1 \
    's/if (persist_zone_wp (dr->state, z, z->start) == -1)/if (0)/' \
    "a reset is durable in the zone table before the zone's data is discarded" \
    test-zbd-flush-order.sh test-zbd-powercut.sh
mutant plugin-dir-one-drive plugin/zbd.c 1 \
    '/^get_drive (/,/^}/s/if (same_medium (\&dr->medium, \&m))/if (1)/' \
    "dir=: every export is a drive of its own, its data and WPs its own" \
    test-zbd-dir.sh
mutant plugin-dir-latch-forgotten plugin/zbd.c 1 \
    's/dr->sync_failed = is_latched (\&m);/dr->sync_failed = false;/' \
    "dir=: a failed sync refuses that drive's writes until restart, even once reopened" \
    test-zbd-dir.sh
mutant plugin-dir-closing-not-waited plugin/zbd.c 1 \
    '/^get_drive (/,/^}/s/if (same_medium (\&dr->medium, \&m))$/if (same_medium (\&dr->medium, \&m) \&\& !dr->closing)/' \
    "dir=: a connection that meets its drive closing waits for the close, not refused" \
    test-zbd-dir.sh

# ---- AES-XTS (common/xts.c) -------------------------------------------
mutant xts-tweak-crypt-sectors common/xts.c 1 \
    's|offset / 512 + fmt->iv_offset|offset / fmt->sector_size + fmt->iv_offset|' \
    "the XTS tweak is the 512-byte sector number (dm-crypt aes-xts-plain64)" \
    test-xts-kat test-zbd-profile-file-filter.sh test-cryptinline-interop.sh
mutant xts-iv-large-ignored common/xts.c 1 \
    's/if (fmt->iv_large_sectors && fmt->sector_size > 512)/if (0)/' \
    "with iv_large_sectors the tweak counts crypt sectors" \
    test-xts-kat test-cryptinline-interop.sh
mutant xts-iv-offset-ignored common/xts.c 1 \
    's|offset / 512 + fmt->iv_offset|offset / 512|' \
    "the IV offset (cryptsetup --skip) is added to the tweak" \
    test-xts-kat test-cryptinline-interop.sh
mutant xts-iv-big-endian common/xts.c 1 \
    's/iv\[i\] = (sector >> (8 \* i)) & 0xff;/iv[7 - i] = (sector >> (8 * i)) \& 0xff;/' \
    "the plain64 IV is the little-endian sector number" \
    test-xts-kat test-zbd-profile-file-filter.sh

# ---- The filter (filters/cryptinline) ----------------------------------
mutant filter-chunk-tweak filters/cryptinline/cryptinline.c 1 \
    's/^     t->offset + start);/     t->offset);/' \
    "the pool encrypts each chunk at its own sector numbers: pool and inline write the same bytes" \
    test-cryptinline-order.sh test-cryptinline-roundtrip.sh
mutant filter-fua-dropped filters/cryptinline/cryptinline.c 1 \
    's/r = next->pwrite (next, b->buf, count, offset, flags, err);/r = next->pwrite (next, b->buf, count, offset, flags \& ~NBDKIT_FLAG_FUA, err);/' \
    "one write below per client write, with the same offset, length and FUA flag" \
    test-cryptinline-order.sh
mutant filter-zero-chunks-no-fua filters/cryptinline/cryptinline.c 1 \
    's/if (r == 0 \&\& (flags \& NBDKIT_FLAG_FUA) \&\& !fua_each)/if (0)/' \
    "write-zeroes with FUA is durable: one flush after its chunks" \
    test-cryptinline-zero-fua.sh test-cryptinline-order.sh
mutant filter-no-align-check filters/cryptinline/cryptinline.c 1 \
    's/if (count % ss == 0 && offset % ss == 0)/if (1)/' \
    "a request not aligned to the crypt sector gets EINVAL, never a read-modify-write" \
    test-cryptinline-zero.sh test-cryptinline-roundtrip.sh
mutant filter-key-dir-one-key filters/cryptinline/cryptinline.c 1 \
    '/^get_export_key (/,/^}/s/if (strcmp (vk->name, name) == 0)/if (1)/' \
    "crypt-key-dir: every export is encrypted with its own key" \
    test-cryptinline-key-dir.sh
mutant filter-key-schedules-kept filters/cryptinline/cryptinline.c 1 \
    's/^    forget_key_schedules (vk->serial);$/    (void) forget_key_schedules;/' \
    "crypt-key-dir: the key schedules made from an export's key go with it" \
    test-cryptinline-key-wipe.sh
mutant filter-unwritten-decrypted filters/cryptinline/cryptinline.c 1 \
    '/^decrypt_read (/,/^}/s/if (e.type & NBDKIT_EXTENT_ZERO) {/if (0) {/' \
    "what the layer below reports unwritten reads as zeros, not decrypted garbage" \
    test-cryptinline-extents.sh test-cryptinline-zero.sh test-zbd-profile-memory-filter.sh

# ---- LUKS (filters/cryptinline/luks.c) ---------------------------------
mutant luks-digest-not-compared filters/cryptinline/luks.c 1 \
    's/if (same_bytes (check, d->value, d->len)) {/if (1 || same_bytes (check, d->value, d->len)) {/' \
    "a wrong passphrase is refused: the volume key must match the header's digest" \
    test-cryptinline-luks.sh test-cryptinline-luks-refuse.sh
mutant luks-header-checksum-ignored filters/cryptinline/luks.c 1 \
    's/ok = memcmp (gcry_md_read (md, algo), stored, dlen) == 0;/ok = true;/' \
    "a LUKS2 header copy with a wrong checksum is not used" \
    test-cryptinline-luks-refuse.sh

# ---- Key memory (common/keymem.c) --------------------------------------
mutant keymem-never-locked common/keymem.c 1 \
    's/if (mlock (p, want) == 0) {/if (0) {/' \
    "key memory is locked where memory can be locked" \
    test-keymem test-cryptinline-keymem.sh
mutant keymem-not-relocked-after-fork common/keymem.c 1 \
    's/if (lock_state == LOCK_WORKS && mlock (c->base, c->size) == -1)/if (0)/' \
    "key memory is locked again in the child of a fork (the serving process)" \
    test-keymem test-cryptinline-keymem.sh
mutant keymem-in-core-dumps common/keymem.c 1 \
    's/^  (void) madvise (p, size, MADV_DONTDUMP);$/  ;/' \
    "key memory is left out of core dumps" \
    test-keymem test-cryptinline-keymem.sh

# ---- nbdzone, host side (tools/) ---------------------------------------
mutant nbdzone-report-wp tools/zone-report.c 1 \
    's/^  s->wp\[z - s->first\] = pos;$/  s->wp[z - s->first] = zone_start (s->l, z);/' \
    "nbdzone report shows each zone's WP (from block status)" \
    test-nbdzone.sh
mutant nbdzone-report-full tools/zone-report.c 1 \
    's/else if (wp >= start + cap)/else if (wp > start + cap)/' \
    "a zone written to its capacity is reported full" \
    test-nbdzone.sh
mutant nbdzone-finish-short tools/nbdzone.c 1 \
    's/nbd_zero (d->nbd, end - wp, wp, 0)/nbd_zero (d->nbd, end - wp - 512, wp, 0)/' \
    "nbdzone finish makes the zone full" \
    test-nbdzone.sh
mutant attach-zone-size-check tools/attach.c 1 \
    's/if (!is_pow2 (l->g.zone_size) || l->g.zone_size % 512) {/if (0) {/' \
    "nbdzone attach refuses, in one line, a zone size a zoned ublk device cannot have" \
    test-nbdzone-attach.sh

# ---- nbdzone attach --reconnect (tools/resend.c, reconnect.c, target-io.c)
# The decisions alone (test-nbdzone-resend), then attach as it runs
# against a fake server that breaks where it is told
# (test-nbdzone-reconnect).
mutant resend-landed-resent tools/resend.c 1 \
    's/^  if (wp >= e)$/  if (wp > e)/' \
    "a write whose zone's WP reached its end landed: it completes, nothing is sent again" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-tail-whole tools/resend.c 1 \
    's/^  else if (wp > s) {$/  else if (0) {/' \
    "of a write that landed in part only the tail from the WP on is sent again" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-fua-no-flush tools/resend.c 1 \
    's/v.flush_first = fua \&\& v.kind != V_RESEND;/v.flush_first = false;/' \
    "a FUA write that landed before the break completes only after a flush" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-lost-acked-resumed tools/resend.c 1 \
    's/^  if (zv->wp_now < low) {$/  if (0) {/' \
    "a zone whose WP is behind what the server acknowledged is never resumed" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-other-writer-resumed tools/resend.c 1 \
    's/^  if (zv->wp_now > high) {$/  if (0) {/' \
    "a zone whose WP is beyond what this client wrote is never resumed" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-order-by-tag tools/resend.c 1 \
    's/^    if (resent_from (rqs, v, a) != resent_from (rqs, v, b))$/    if (0)/' \
    "the writes of a zone are sent again in WP order" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant resend-reset-all-partial tools/resend.c 1 \
    's/^    if (!zones\[z\].conventional \&\& !zones\[z\].unwritable \&\&$/    if (0 \&\&/' \
    "a reset of all zones is done only once every sequential zone is empty" \
    test-nbdzone-resend test-nbdzone-reconnect
mutant reconnect-other-disk-resumed tools/reconnect.c 1 \
    's/^  if (!same_disk (\&d->ctl, \&now, why, whylen)) {$/  if (0) {/' \
    "nothing is resumed on another disk, another key or another geometry" \
    test-nbdzone-reconnect
mutant reconnect-refused-connected tools/reconnect.c 1 \
    's/^      drop_new_connections (d);$/      (void) drop_new_connections;/' \
    "once attach refused to resume, no request reaches the server: each fails with EIO" \
    test-nbdzone-reconnect
mutant reconnect-queue-decided-alone tools/reconnect.c 1 \
    's/^  for (qi = 0; qi < d->nr_queues; qi++)$/  for (qi = 0; qi < 1; qi++)/' \
    "one decision covers the held requests of every queue" \
    test-nbdzone-reconnect
mutant resend-tail-wrong-bytes tools/target-io.c 1 \
    's/(char \*) io->buf + (io->v.from - off),/io->buf,/' \
    "a tail sent again carries the request's own bytes from the WP on" \
    test-nbdzone-reconnect
mutant resend-late-copy-fails tools/target-io.c 1 \
    's/^    if (io->err \&\& io->resent \&\& !zone_is_conv (\&d->ctl.l, z) \&\&$/    if (0 \&\& io->resent \&\& !zone_is_conv (\&d->ctl.l, z) \&\&/' \
    "a resent write refused because the old server finished the first copy counts as landed" \
    test-nbdzone-reconnect

# ---- The demo (make serve) ---------------------------------------------
mutant demo-plaintext serve-demo 2 \
    's/--filter=cryptinline //; s/ *crypt-key-file="\$key"//' \
    "make serve encrypts: no plaintext reaches the demo image" \
    test-zbd-demo.sh
