/* nbdzone attach --recover: take over a zoned ublk device whose attach
 * process died (kill -9, the OOM killer, an upgrade of the tool), with
 * the filesystem above still mounted.
 *
 * How it works.  attach creates its devices with ublk's user recovery
 * (UBLK_F_USER_RECOVERY and UBLK_F_USER_RECOVERY_REISSUE) whenever it
 * may reconnect.  When the process dies the kernel keeps the device
 * and quiesces it: new requests wait, and the requests the dead process
 * had taken are put back to be handed over again.  A new attach then
 * checks that the device is quiesced and has the export's geometry,
 * and that the export is the disk the device served with the same key
 * (the identity attach recorded when it made the device, in
 * NBDZONE_RUN_DIR, /run/nbdzone by default); sends
 * START_USER_RECOVERY, starts its queues as for a new device, and ends
 * with END_USER_RECOVERY, which lets the requests flow.
 *
 * A request handed over again may have been sent by the dead process
 * already.  Zones say which: a write to a sequential zone below the
 * write pointer the zone had at the takeover had landed (a server
 * writes a zone only at its WP, and the kernel sends no new write
 * below it).  Its bytes are read back and compared before it is
 * completed without being sent; a write across that WP is sent from
 * it on (target-io.c, recovered_write).  A zone append has no place of
 * its own: each process notes where it put each append in flight, per
 * tag, in a file beside the identity (the append journal, mapped
 * shared, so the notes outlive the process); after a takeover an
 * append handed over again whose bytes are found at a noted place below
 * the WP is completed there, and only the others are placed anew.
 * Placing a landed append again would fill its zone before the
 * filesystem expects.  Reads, flushes and zone commands are served
 * again, which is harmless.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "attach.h"
#include "nbdzone.h"

const char *
identity_dir (void)
{
  const char *dir = getenv ("NBDZONE_RUN_DIR");

  return dir && *dir ? dir : "/run/nbdzone";
}

void
identity_path (int id, char *buf, size_t len)
{
  snprintf (buf, len, "%s/ublkb%d", identity_dir (), id);
}

void
identity_forget (int id)
{
  char path[512];

  identity_path (id, path, sizeof path);
  unlink (path);
  strncat (path, ".appends", sizeof path - strlen (path) - 1);
  unlink (path);
}

/* What a device serves, for a later --recover: the export's identity
 * and key check value.  Written once the device exists.
 */
void
identity_save (const struct dev *d)
{
  char path[512], tmp[520];
  FILE *fp;

  identity_path (d->id, path, sizeof path);
  snprintf (tmp, sizeof tmp, "%s.new", path);
  mkdir (identity_dir (), 0700);
  fp = fopen (tmp, "w");
  if (fp) {
    fchmod (fileno (fp), 0600);
    fprintf (fp, "disk-id %s\nkey-check %s\nsize %" PRIu64 "\n",
             d->ctl.l.g.disk_id, d->ctl.l.g.key_check, d->ctl.l.size);
    if (fclose (fp) == 0 && rename (tmp, path) == 0)
      return;
  }
  fprintf (stderr, "%s: warning: cannot record which disk /dev/ublkb%d "
           "serves in %s (%m): if this process dies, attach --recover "
           "will refuse to take the device over\n", progname, d->id, path);
  unlink (tmp);
}

/* The identity recorded for device ID into DISK_ID and KEY_CHECK (the
 * sizes of struct zoned_geometry's); 0, or -1 with why in WHY.
 */
static int
identity_load (int id, char *disk_id, char *key_check, char *why,
               size_t whylen)
{
  char path[512], line[256];
  FILE *fp;
  bool have_id = false, have_key = false;

  identity_path (id, path, sizeof path);
  fp = fopen (path, "r");
  if (!fp) {
    snprintf (why, whylen, "cannot tell which disk it served (%.300s: %s)",
              path, strerror (errno));
    return -1;
  }
  disk_id[0] = key_check[0] = '\0';
  while (fgets (line, sizeof line, fp)) {
    line[strcspn (line, "\n")] = '\0';
    if (strncmp (line, "disk-id ", 8) == 0) {
      snprintf (disk_id, sizeof ((struct zoned_geometry *) 0)->disk_id,
                "%.127s", line + 8);
      have_id = true;
    }
    else if (strncmp (line, "key-check ", 10) == 0) {
      snprintf (key_check, sizeof ((struct zoned_geometry *) 0)->key_check,
                "%.71s", line + 10);
      have_key = true;
    }
  }
  fclose (fp);
  if (!have_id || !have_key || !disk_id[0]) {
    snprintf (why, whylen, "%.300s does not say which disk it served", path);
    return -1;
  }
  return 0;
}

/* Wait for the kernel to quiesce device ID after its process died;
 * INFO gets its state.  0, or -1 with why in WHY.
 */
static int
wait_quiesced (struct control *c, int id, struct ublksrv_ctrl_dev_info *info,
               char *why, size_t whylen)
{
  int i, r;

  for (i = 0; ; i++) {
    memset (info, 0, sizeof *info);
    r = control_cmd (c, UBLK_U_CMD_GET_DEV_INFO, id, info, sizeof *info, 0);
    if (r < 0) {
      snprintf (why, whylen, "no such ublk device (%s)", strerror (-r));
      return -1;
    }
    if (!(info->flags & UBLK_F_USER_RECOVERY)) {
      snprintf (why, whylen, "it was attached without user recovery "
                "(with --reconnect 0, or by a kernel or an nbdzone without "
                "it): detach it and attach again");
      return -1;
    }
    if (info->state == UBLK_S_DEV_QUIESCED)
      return 0;
    if (info->state == UBLK_S_DEV_LIVE && server_running (info->ublksrv_pid)) {
      snprintf (why, whylen, "process %d serves it and is alive: nothing "
                "to recover", info->ublksrv_pid);
      return -1;
    }
    if (info->state != UBLK_S_DEV_LIVE) {
      snprintf (why, whylen, "it is %s, not waiting for a new server: "
                "detach it and attach again",
                info->state == UBLK_S_DEV_DEAD ? "stopped" : "failing I/O");
      return -1;
    }
    if (i == 300) {
      snprintf (why, whylen, "its server is gone, but the kernel has not "
                "quiesced it after 30 s");
      return -1;
    }
    usleep (100000);            /* the kernel quiesces it shortly */
  }
}

/* Before anything is started: is device ID one this export may take
 * over?  EXPECTED: the parameters a new device for the export would
 * have.  Sets the device's queues, depth and id in D.  0, or -1 after
 * one line saying why.
 */
int
recover_probe (struct dev *d, int id, const struct nbdzone_ublk_params *expected)
{
  struct control c;
  struct ublksrv_ctrl_dev_info info;
  struct nbdzone_ublk_params p;
  char why[1024], disk_id[128], key_check[72];
  int r;

  r = control_open (&c);
  if (ublk_unavailable (r, why, sizeof why))
    goto refuse;
  r = wait_quiesced (&c, id, &info, why, sizeof why);
  if (r == 0) {
    memset (&p, 0, sizeof p);
    p.len = sizeof p;
    r = control_cmd (&c, UBLK_U_CMD_GET_PARAMS, id, &p, sizeof p, 0);
    if (r < 0)
      snprintf (why, sizeof why, "cannot read its parameters: %s",
                strerror (-r));
  }
  control_close (&c);
  if (r < 0)
    goto refuse;
  if (!(info.flags & UBLK_F_ZONED) ||
      p.basic.dev_sectors != expected->basic.dev_sectors ||
      p.basic.chunk_sectors != expected->basic.chunk_sectors ||
      p.basic.logical_bs_shift != expected->basic.logical_bs_shift) {
    snprintf (why, sizeof why, "its geometry (%llu sectors, zones of %u, "
              "blocks of %u bytes) is not the export's (%llu, %u, %u)",
              (unsigned long long) p.basic.dev_sectors,
              p.basic.chunk_sectors, 1U << p.basic.logical_bs_shift,
              (unsigned long long) expected->basic.dev_sectors,
              expected->basic.chunk_sectors,
              1U << expected->basic.logical_bs_shift);
    goto refuse;
  }
  if (info.max_io_buf_bytes > d->max_io) {
    snprintf (why, sizeof why, "it takes requests of %u bytes, more than "
              "the server's maximum of %u", info.max_io_buf_bytes, d->max_io);
    goto refuse;
  }
  if (identity_load (id, disk_id, key_check, why, sizeof why) == -1)
    goto refuse;
  if (strcmp (disk_id, d->ctl.l.g.disk_id) ||
      strcmp (key_check, d->ctl.l.g.key_check)) {
    snprintf (why, sizeof why, "it served %s (disk-id %s, key check %s), "
              "the export is %s (disk-id %s, key check %s)",
              strcmp (disk_id, d->ctl.l.g.disk_id) ? "another disk" :
              "this disk with another key", disk_id,
              key_check[0] ? key_check : "none",
              d->ctl.uri, d->ctl.l.g.disk_id[0] ? d->ctl.l.g.disk_id : "none",
              d->ctl.l.g.key_check[0] ? d->ctl.l.g.key_check : "none");
    goto refuse;
  }
  d->id = id;
  d->nr_queues = info.nr_hw_queues;
  d->depth = info.queue_depth;
  d->max_io = info.max_io_buf_bytes;
  d->recovering = true;
  return 0;

 refuse:
  fprintf (stderr, "%s: cannot recover /dev/ublkb%d with %s: %s; nothing "
           "was sent\n", progname, id, d->ctl.uri, why);
  return -1;
}

/* Once the WPs are read: a write below a zone's WP now was handed over
 * again after the takeover (recovered_write).
 */
void
recover_mark_zones (struct dev *d)
{
  uint64_t z;
  size_t i;

  pthread_mutex_lock (&d->zone_lock);
  for (z = 0; z < d->nr_zones; z++)
    d->zones[z].recovered_wp = d->zones[z].wp;
  /* An append that landed in part keeps its place: no new append may
   * be put over the rest of it before it is handed over again.
   */
  for (i = 0; i < d->nr_landed; i++) {
    const struct append_note *e = &d->landed[i];
    uint64_t zn = zone_of (d, e->off);

    if (zn < d->nr_zones && e->off < d->zones[zn].wp &&
        e->off + e->len > d->zones[zn].wp)
      d->zones[zn].wp = e->off + e->len;
  }
  pthread_mutex_unlock (&d->zone_lock);
}

static void
journal_path (int id, char *buf, size_t len)
{
  char base[480];

  identity_path (id, base, sizeof base);
  snprintf (buf, len, "%s.appends", base);
}

void
journal_open (struct dev *d, bool keep)
{
  size_t n = (size_t) d->nr_queues * d->depth, i;
  size_t len = n * sizeof (struct append_note);
  struct append_note *old = NULL;
  char path[512];
  int fd;

  journal_path (d->id, path, sizeof path);
  mkdir (identity_dir (), 0700);
  fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd == -1)
    goto fail;
  if (keep && (old = calloc (n, sizeof *old)) != NULL &&
      pread (fd, old, len, 0) == (ssize_t) len) {
    for (i = 0; i < n; i++)
      if (old[i].live == 1 && old[i].len)
        old[d->nr_landed++] = old[i];
    d->landed = old;
  }
  else
    free (old);
  if (ftruncate (fd, 0) == -1 || ftruncate (fd, len) == -1)
    goto fail;
  d->journal = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  close (fd);
  if (d->journal == MAP_FAILED) {
    d->journal = NULL;
    fd = -1;
    goto fail;
  }
  d->journal_len = len;
  return;

 fail:
  fprintf (stderr, "%s: warning: cannot keep the append journal of "
           "/dev/ublkb%d in %s (%m): if this process dies, the zone appends "
           "it had sent are written again after attach --recover\n",
           progname, d->id, path);
  if (fd >= 0)
    close (fd);
}

void
journal_close (struct dev *d)
{
  if (d->journal)
    munmap (d->journal, d->journal_len);
  d->journal = NULL;
  free (d->landed);
  d->landed = NULL;
  d->nr_landed = 0;
}

static struct append_note *
note_of (struct tag_io *io)
{
  struct dev *d = io->q->d;

  if (!d->journal)
    return NULL;
  return &d->journal[(size_t) io->q->id * d->depth + io->tag];
}

void
journal_note (struct tag_io *io, uint64_t off)
{
  struct append_note *e = note_of (io);

  if (e) {
    e->off = off;
    e->len = io->len;
    __atomic_store_n (&e->live, 1, __ATOMIC_RELEASE);
  }
}

void
journal_clear (struct tag_io *io)
{
  struct append_note *e = note_of (io);

  if (e && e->live)
    __atomic_store_n (&e->live, 0, __ATOMIC_RELEASE);
}

bool
claim_landed_append (struct tag_io *io, uint64_t *off)
{
  struct dev *d = io->q->d;
  uint64_t z = zone_of (d, io->off), below;
  size_t i;

  pthread_mutex_lock (&d->zone_lock);
  below = d->zones[z].recovered_wp;
  pthread_mutex_unlock (&d->zone_lock);
  for (i = 0; i < d->nr_landed; i++) {
    struct append_note *e = &d->landed[i];
    uint64_t end;
    bool mine;

    if (e->len != io->len || zone_of (d, e->off) != z || e->off >= below)
      continue;
    end = e->off + e->len < below ? e->off + e->len : below;
    if (server_holds (d, e->off, end - e->off, io->buf) != 1)
      continue;
    /* Two appends of the same bytes: each takes one place. */
    pthread_mutex_lock (&d->zone_lock);
    mine = e->live == 1;
    e->live = 2;
    pthread_mutex_unlock (&d->zone_lock);
    if (mine) {
      *off = e->off;
      return true;
    }
  }
  return false;
}
