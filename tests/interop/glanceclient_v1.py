#!/usr/bin/env python3
"""Drives python-glanceclient's image API v1 -- its `glance` CLI and its Python API -- against a
running gateway in no-auth mode, and counts every check as passed or failed.

Usage: glanceclient_v1.py --endpoint http://127.0.0.1:PORT/

The CLI is run with `--os-image-api-version 1 --os-image-url URL --os-auth-token x` (no identity
service is contacted when a token and an image URL are both given); one call uses the
OS_IMAGE_URL / OS_AUTH_TOKEN environment instead. Its standard input is a pseudo-terminal, so it
never mistakes an empty stdin for image data.

Exit status: 0 when every check passed, 1 otherwise. The last line is `N passed, M failed`.
"""

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
import urllib.error
import urllib.request
import uuid

from glanceclient import Client
from glanceclient import exc

TOKEN = "x"
PAGED_IMAGES = 30


class Checks:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, name, condition, answer=""):
        """Counts one check; on failure prints what the server (or client) answered."""
        if condition:
            self.passed += 1
            print(f"ok    {name}")
        else:
            self.failed += 1
            print(f"FAIL  {name}")
            if answer != "":
                for line in str(answer).rstrip().splitlines():
                    print(f"      | {line}")
        return bool(condition)

    def equal(self, name, actual, expected, answer=None):
        detail = f"expected {expected!r}, got {actual!r}"
        if answer not in (None, ""):
            detail += f"\n{answer}"
        return self.ok(name, actual == expected, detail)

    def crashed(self, name, error):
        """A step that raised: one failed check carrying the server's answer."""
        self.failed += 1
        print(f"FAIL  {name}: raised {type(error).__name__}")
        if isinstance(error, exc.HTTPException):
            text = f"HTTP {getattr(error, 'code', '?')}: {error.details}"
        else:
            text = "".join(traceback.format_exception_only(type(error), error))
        for line in text.rstrip().splitlines():
            print(f"      | {line}")


def md5_of(data):
    return hashlib.md5(data).hexdigest()


def md5_file(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Cli:
    """Runs the `glance` command of the same environment as this interpreter."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        exe = os.path.join(os.path.dirname(sys.executable), "glance")
        self.glance = exe if os.path.exists(exe) else shutil.which("glance")
        if not self.glance:
            raise SystemExit("the glance command is not installed next to this python")

    def run(self, *args, via_env=False):
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        cmd = [self.glance, "--os-image-api-version", "1"]
        if via_env:
            env["OS_IMAGE_URL"] = self.endpoint
            env["OS_AUTH_TOKEN"] = TOKEN
        else:
            cmd += ["--os-image-url", self.endpoint, "--os-auth-token", TOKEN]
        cmd += list(args)
        master, slave = os.openpty()
        try:
            proc = subprocess.run(
                cmd,
                stdin=slave,
                capture_output=True,
                text=True,
                env=env,
                timeout=300,
            )
        finally:
            os.close(slave)
            os.close(master)
        return proc

    @staticmethod
    def answer(proc):
        return (
            f"exit {proc.returncode}\nstdout:\n{proc.stdout.rstrip()}\n"
            f"stderr:\n{proc.stderr.rstrip()}"
        )

    @staticmethod
    def table_rows(text):
        """The data rows of a prettytable, as lists of stripped cells."""
        rows = []
        for line in text.splitlines():
            if line.startswith("|"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
        return rows[1:]  # the first row is the header

    @classmethod
    def show_fields(cls, text):
        return {row[0]: row[1] for row in cls.table_rows(text) if len(row) == 2}


def write_file(directory, name, data):
    path = os.path.join(directory, name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def step(checks, name, fn):
    """Runs a group of checks; an exception counts as one failure and does not stop the run."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - report and go on
        checks.crashed(name, e)
        return None


def cli_checks(checks, cli, gc, work, batch_id):
    # --- create with data from a file ---
    data1 = os.urandom(3 * 1024 * 1024 + 17)
    path1 = write_file(work, "cli-one.img", data1)
    p = cli.run(
        "image-create", "--name", "cli image one", "--disk-format", "qcow2",
        "--container-format", "bare", "--is-public", "True",
        "--property", "distro=debian", "--property", "release 12=bookworm",
        "--file", path1,
    )
    if not checks.ok("cli image-create --file exits 0", p.returncode == 0, Cli.answer(p)):
        return
    f = Cli.show_fields(p.stdout)
    image1 = f.get("id", "")
    checks.equal("cli image-create --file: status active", f.get("status"), "active", p.stdout)
    checks.equal("cli image-create --file: checksum is MD5 of the file",
                 f.get("checksum"), md5_of(data1), p.stdout)
    checks.equal("cli image-create --file: size", f.get("size"), str(len(data1)), p.stdout)
    checks.equal("cli image-create --file: name with a space", f.get("name"),
                 "cli image one", p.stdout)
    checks.equal("cli image-create --file: property", f.get("Property 'distro'"), "debian",
                 p.stdout)
    checks.equal("cli image-create --file: property key with a space",
                 f.get("Property 'release 12'"), "bookworm", p.stdout)
    checks.equal("cli image-create --file: is_public", f.get("is_public"), "True", p.stdout)

    # --- show (also via the OS_IMAGE_URL / OS_AUTH_TOKEN environment) ---
    p = cli.run("image-show", image1, via_env=True)
    if checks.ok("cli image-show (environment auth) exits 0", p.returncode == 0, Cli.answer(p)):
        f = Cli.show_fields(p.stdout)
        checks.equal("cli image-show: id", f.get("id"), image1, p.stdout)
        checks.equal("cli image-show: disk_format", f.get("disk_format"), "qcow2", p.stdout)
        checks.equal("cli image-show: checksum", f.get("checksum"), md5_of(data1), p.stdout)
        checks.equal("cli image-show: property", f.get("Property 'distro'"), "debian", p.stdout)

    # --- download to a file, MD5 check ---
    out1 = os.path.join(work, "cli-one.out")
    p = cli.run("image-download", image1, "--file", out1)
    if checks.ok("cli image-download --file exits 0", p.returncode == 0, Cli.answer(p)):
        checks.equal("cli image-download: MD5 of the downloaded file", md5_file(out1),
                     md5_of(data1))

    # --- create queued, then upload with image-update --file ---
    p = cli.run("image-create", "--name", "cli queued", "--property", "stage=reserved")
    if not checks.ok("cli image-create (reserve) exits 0", p.returncode == 0, Cli.answer(p)):
        return
    f = Cli.show_fields(p.stdout)
    image2 = f.get("id", "")
    checks.equal("cli image-create (reserve): status queued", f.get("status"), "queued", p.stdout)
    checks.equal("cli image-create (reserve): no checksum yet", f.get("checksum"), "None",
                 p.stdout)
    data2 = os.urandom(200_000)
    path2 = write_file(work, "cli-two.img", data2)
    p = cli.run("image-update", image2, "--disk-format", "raw", "--container-format", "bare",
                "--file", path2)
    if checks.ok("cli image-update --file exits 0", p.returncode == 0, Cli.answer(p)):
        f = Cli.show_fields(p.stdout)
        checks.equal("cli image-update --file: status active", f.get("status"), "active",
                     p.stdout)
        checks.equal("cli image-update --file: checksum is MD5 of the file",
                     f.get("checksum"), md5_of(data2), p.stdout)
        checks.equal("cli image-update --file: size", f.get("size"), str(len(data2)), p.stdout)
        checks.equal("cli image-update --file: properties kept while uploading",
                     f.get("Property 'stage'"), "reserved", p.stdout)
    out2 = os.path.join(work, "cli-two.out")
    p = cli.run("image-download", image2, "--file", out2)
    if checks.ok("cli image-download (uploaded later) exits 0", p.returncode == 0,
                 Cli.answer(p)):
        checks.equal("cli image-download (uploaded later): MD5", md5_file(out2), md5_of(data2))

    # --- update: name and properties; the CLI keeps unmentioned properties unless told ---
    p = cli.run("image-update", image1, "--name", "cli image renamed", "--property", "arch=x86_64")
    if checks.ok("cli image-update (metadata) exits 0", p.returncode == 0, Cli.answer(p)):
        f = Cli.show_fields(p.stdout)
        checks.equal("cli image-update: new name", f.get("name"), "cli image renamed", p.stdout)
        checks.equal("cli image-update: new property", f.get("Property 'arch'"), "x86_64",
                     p.stdout)
        checks.equal("cli image-update without --purge-props keeps others",
                     f.get("Property 'distro'"), "debian", p.stdout)
        checks.equal("cli image-update: checksum unchanged", f.get("checksum"), md5_of(data1),
                     p.stdout)
    p = cli.run("image-update", image1, "--property", "arch=aarch64", "--purge-props")
    if checks.ok("cli image-update --purge-props exits 0", p.returncode == 0, Cli.answer(p)):
        props = {k: v for k, v in Cli.show_fields(p.stdout).items() if k.startswith("Property")}
        checks.equal("cli image-update --purge-props leaves only the named property", props,
                     {"Property 'arch'": "aarch64"}, p.stdout)
    try:
        head = gc.images.get(image1)
        checks.equal("cli update seen by the API: properties", head.properties,
                     {"arch": "aarch64"})
        checks.equal("cli update seen by the API: name", head.name, "cli image renamed")
    except Exception as e:  # noqa: BLE001
        checks.crashed("api images.get after cli update", e)

    # --- list paging past 25 images (the images were made by the API section) ---
    for page_size in (None, 7):
        args = ["image-list", "--property-filter", f"batch={batch_id}"]
        label = "default page size"
        if page_size:
            args += ["--page-size", str(page_size)]
            label = f"--page-size {page_size}"
        p = cli.run(*args)
        if checks.ok(f"cli image-list ({label}) exits 0", p.returncode == 0, Cli.answer(p)):
            names = [row[1] for row in Cli.table_rows(p.stdout) if len(row) == 6]
            expected = [f"paged-{i:02d}" for i in range(PAGED_IMAGES)]
            checks.equal(f"cli image-list ({label}): all {PAGED_IMAGES} images once, by name",
                         names, expected, p.stdout)
    p = cli.run("image-list", "--all-tenants")
    if checks.ok("cli image-list --all-tenants exits 0", p.returncode == 0, Cli.answer(p)):
        ids = [row[0] for row in Cli.table_rows(p.stdout)]
        checks.ok("cli image-list --all-tenants includes the private image",
                  ids.count(image2) == 1, p.stdout)

    # --- members and shared images ---
    tenant_a, tenant_b = f"tenant-a-{batch_id}", f"tenant-b-{batch_id}"
    for args in ((image1, tenant_a, "--can-share"), (image1, tenant_b)):
        p = cli.run("member-create", *args)
        checks.ok(f"cli member-create {' '.join(args[1:])} exits 0", p.returncode == 0,
                  Cli.answer(p))
    p = cli.run("member-list", "--image-id", image1)
    if checks.ok("cli member-list --image-id exits 0", p.returncode == 0, Cli.answer(p)):
        rows = sorted((r[0], r[1], r[2]) for r in Cli.table_rows(p.stdout))
        # the CLI prints can_share False as an empty cell
        checks.equal("cli member-list --image-id: both members, can_share",
                     rows, [(image1, tenant_a, "True"), (image1, tenant_b, "")], p.stdout)
    p = cli.run("member-list", "--tenant-id", tenant_a)
    if checks.ok("cli member-list --tenant-id exits 0", p.returncode == 0, Cli.answer(p)):
        rows = [(r[0], r[1], r[2]) for r in Cli.table_rows(p.stdout)]
        checks.equal("cli member-list --tenant-id: the shared image", rows,
                     [(image1, tenant_a, "True")], p.stdout)
    p = cli.run("member-delete", image1, tenant_b)
    checks.ok("cli member-delete exits 0", p.returncode == 0, Cli.answer(p))
    p = cli.run("member-list", "--image-id", image1)
    if checks.ok("cli member-list after delete exits 0", p.returncode == 0, Cli.answer(p)):
        rows = [r[1] for r in Cli.table_rows(p.stdout)]
        checks.equal("cli member-list after delete: one member left", rows, [tenant_a], p.stdout)
    p = cli.run("member-list", "--tenant-id", tenant_b)
    if checks.ok("cli member-list --tenant-id (removed) exits 0", p.returncode == 0,
                 Cli.answer(p)):
        checks.equal("cli member-list --tenant-id (removed): nothing shared",
                     Cli.table_rows(p.stdout), [], p.stdout)

    # --- delete ---
    p = cli.run("image-delete", image2)
    checks.ok("cli image-delete exits 0", p.returncode == 0 and "Unable" not in p.stdout,
              Cli.answer(p))
    p = cli.run("image-show", image2)
    if checks.ok("cli image-show (deleted, admin) exits 0", p.returncode == 0, Cli.answer(p)):
        f = Cli.show_fields(p.stdout)
        checks.equal("cli image-show (deleted): status", f.get("status"), "deleted", p.stdout)
        checks.equal("cli image-show (deleted): deleted", f.get("deleted"), "True", p.stdout)
    p = cli.run("image-download", image2, "--file", os.path.join(work, "gone.out"))
    checks.ok("cli image-download of a deleted image fails", p.returncode != 0, Cli.answer(p))
    p = cli.run("image-delete", image2)
    checks.ok("cli image-delete of a deleted image fails", p.returncode != 0, Cli.answer(p))


def make_paged_images(gc, batch_id):
    ids = []
    for i in range(PAGED_IMAGES):
        img = gc.images.create(
            name=f"paged-{i:02d}", disk_format="raw", container_format="bare",
            is_public=True, properties={"batch": batch_id},
            data=io.BytesIO(f"image {i} of batch {batch_id}\n".encode()),
        )
        ids.append(img.id)
    return ids


def api_checks(checks, gc, endpoint, work, batch_id, paged_ids):
    """The Python API, in independent parts: a part that raises is one failure."""
    st = {}  # ids shared between the parts
    data1 = os.urandom(5 * 1024 * 1024 + 3)
    m = gc.image_members
    tx, ty, tz = (f"tenant-{c}-{batch_id}" for c in "xyz")

    def part_0():
        """create with data"""
        path1 = write_file(work, "api-one.img", data1)
        with open(path1, "rb") as f:
            img = gc.images.create(
                name="api image one", disk_format="raw", container_format="bare",
                is_public=False, min_ram=512, properties={"os_distro": "debian", "note": "a b:c/d?"},
                data=f,
            )
        checks.equal("api create with data: status", img.status, "active")
        checks.equal("api create with data: checksum is MD5", img.checksum, md5_of(data1))
        checks.equal("api create with data: size", img.size, len(data1))
        checks.equal("api create with data: properties", img.properties,
                     {"os_distro": "debian", "note": "a b:c/d?"})
        st["image1"] = img.id

    def part_1():
        """show (HEAD)"""
        req_ids = []
        head = gc.images.get(st["image1"], return_req_id=req_ids)
        checks.equal("api get: name", head.name, "api image one")
        checks.equal("api get: status", head.status, "active")
        checks.equal("api get: size", head.size, len(data1))
        checks.equal("api get: min_ram", head.min_ram, 512)
        checks.equal("api get: is_public", head.is_public, False)
        checks.equal("api get: protected", head.protected, False)
        checks.equal("api get: checksum", head.checksum, md5_of(data1))
        checks.equal("api get: os_hash_algo", getattr(head, "os_hash_algo", None), "sha512")
        checks.equal("api get: os_hash_value is SHA-512", getattr(head, "os_hash_value", None),
                     hashlib.sha512(data1).hexdigest())
        checks.equal("api get: properties", head.properties,
                     {"os_distro": "debian", "note": "a b:c/d?"})
        checks.ok("api get: a request id is returned", bool(req_ids and req_ids[0]), req_ids)

    def part_2():
        """download, MD5 check (the client verifies the checksum header too)"""
        body = gc.images.data(st["image1"])
        checks.equal("api data: announced length", len(body), len(data1))
        got = b"".join(body)
        checks.equal("api data: MD5 of the downloaded bytes", md5_of(got), md5_of(data1))

    def part_3():
        """create queued, then upload"""
        img = gc.images.create(name="api queued", properties={"keep": "me"})
        st["image2"] = img.id
        checks.equal("api create (reserve): status", img.status, "queued")
        data2 = os.urandom(123_457)
        img = gc.images.update(st["image2"], data=io.BytesIO(data2), disk_format="qcow2",
                               container_format="ovf")
        checks.equal("api upload to queued: status", img.status, "active")
        checks.equal("api upload to queued: checksum", img.checksum, md5_of(data2))
        checks.equal("api upload to queued: size", img.size, len(data2))
        checks.equal("api upload to queued: properties kept", img.properties, {"keep": "me"})
        checks.equal("api upload to queued: MD5 of the download",
                     md5_of(b"".join(gc.images.data(st["image2"]))), md5_of(data2))
        try:
            gc.images.update(st["image2"], data=io.BytesIO(b"again"))
            checks.ok("api upload to an active image is refused", False, "the server accepted it")
        except exc.HTTPConflict:
            checks.ok("api upload to an active image is refused (409)", True)

    def part_4():
        """a wrong checksum kills the upload"""
        try:
            gc.images.create(name="api bad checksum", disk_format="raw", container_format="bare",
                             checksum="0" * 32, data=io.BytesIO(b"some bytes"))
            checks.ok("api create with a wrong checksum is refused", False,
                      "the server accepted it")
        except exc.HTTPBadRequest as e:
            checks.ok("api create with a wrong checksum is refused (400)", True)
            del e

    def part_5():
        """update: name, properties, purge behaviour"""
        img = gc.images.update(st["image1"], name="api image renamed", properties={"arch": "x86_64"})
        checks.equal("api update: new name", img.name, "api image renamed")
        checks.equal("api update (purge_props false): properties merged", img.properties,
                     {"os_distro": "debian", "note": "a b:c/d?", "arch": "x86_64"})
        img = gc.images.update(st["image1"], properties={"arch": "aarch64"}, purge_props=True)
        checks.equal("api update (purge_props true): properties replaced", img.properties,
                     {"arch": "aarch64"})
        img = gc.images.update(st["image1"], is_public=True, min_disk=3)
        checks.equal("api update: is_public", img.is_public, True)
        checks.equal("api update: min_disk", img.min_disk, 3)
        checks.equal("api update: name untouched", img.name, "api image renamed")
        head = gc.images.get(st["image1"])
        checks.equal("api get after updates: properties", head.properties, {"arch": "aarch64"})
        checks.equal("api get after updates: is_public", head.is_public, True)

    def part_6():
        """UTF-8 text (the JSON views; headers are read by the client as Latin-1)"""
        img = gc.images.create(name="Débian – 12", properties={"owner_note": "naïve café"})
        checks.equal("api create: UTF-8 name round-trips", img.name, "Débian – 12")
        checks.equal("api create: UTF-8 property round-trips", img.properties,
                     {"owner_note": "naïve café"})
        listed = [i for i in gc.images.list(is_public=None, filters={"name": "Débian – 12"})]
        checks.equal("api list filter by UTF-8 name", [i.id for i in listed], [img.id])
        gc.images.delete(img.id)

    def part_7():
        """list paging past 25"""
        wanted = set(paged_ids)
        filters = {"properties": {"batch": batch_id}}
        for page_size in (7, 20, 25, 1000):
            got = [i.id for i in gc.images.list(page_size=page_size, filters=dict(filters))]
            checks.ok(
                f"api list (page_size {page_size}): all {PAGED_IMAGES} images exactly once",
                len(got) == PAGED_IMAGES and set(got) == wanted,
                f"got {len(got)} ids, {len(set(got))} distinct, "
                f"{len(wanted - set(got))} missing, {len(set(got) - wanted)} unexpected",
            )
        got = [i.name for i in gc.images.list(page_size=4, sort_key="name", sort_dir="desc",
                                              filters=dict(filters))]
        checks.equal("api list sorted by name desc, paged by 4", got,
                     [f"paged-{i:02d}" for i in reversed(range(PAGED_IMAGES))])
        got = [i.id for i in gc.images.list(page_size=5, limit=12, filters=dict(filters))]
        checks.equal("api list with an absolute limit of 12", len(got), 12)
        # The server's own default page (25) and the marker, as the client sends it.
        _, page1 = gc.http_client.get(f"/v1/images?property-batch={batch_id}")
        first = [i["id"] for i in page1["images"]]
        checks.equal("server default limit is 25", len(first), 25, json.dumps(page1)[:400])
        if first:
            _, page2 = gc.http_client.get(
                f"/v1/images?property-batch={batch_id}&marker={first[-1]}")
            second = [i["id"] for i in page2["images"]]
            checks.ok("page after the marker holds the remaining 5",
                      len(second) == PAGED_IMAGES - 25 and not set(second) & set(first)
                      and set(first) | set(second) == wanted,
                      json.dumps(page2)[:400])
        private = [i.id for i in gc.images.list(filters=dict(filters, is_public=False))]
        checks.equal("api list is_public=False: none of the public batch", private, [])

    def part_8():
        """members"""
        m.create(st["image1"], tx, can_share=True)
        m.create(st["image1"], ty)
        members = sorted((x.member_id, x.can_share) for x in m.list(image=st["image1"]))
        checks.equal("api members create/list", members, [(tx, True), (ty, False)])
        m.create(st["image1"], ty, can_share=True)
        members = sorted((x.member_id, x.can_share) for x in m.list(image=st["image1"]))
        checks.equal("api members create again updates can_share", members,
                     [(tx, True), (ty, True)])
        m.replace(st["image1"], [{"member_id": tz, "can_share": False}, {"member_id": tx}])
        members = sorted((x.member_id, x.can_share) for x in m.list(image=st["image1"]))
        checks.equal("api members replace (kept one keeps can_share)", members,
                     [(tx, True), (tz, False)])
        m.delete(st["image1"], tz)
        members = [(x.member_id, x.can_share) for x in m.list(image=st["image1"])]
        checks.equal("api members delete", members, [(tx, True)])
        try:
            m.delete(st["image1"], tz)
            checks.ok("api members delete of a non-member is refused", False,
                      "the server accepted it")
        except exc.HTTPNotFound:
            checks.ok("api members delete of a non-member is refused (404)", True)
        m.create(st["image2"], tx)

    def part_9():
        """shared images"""
        shared = sorted((x.image_id, x.can_share, x.member_id) for x in m.list(member=tx))
        checks.equal("api shared images of a tenant", shared,
                     sorted([(st["image1"], True, tx), (st["image2"], False, tx)]))
        checks.equal("api shared images of an unknown tenant", m.list(member="nobody-" + batch_id),
                     [])

    def part_10():
        """delete"""
        gc.images.delete(st["image2"])
        head = gc.images.get(st["image2"])
        checks.equal("api get after delete (admin): status", head.status, "deleted")
        checks.equal("api get after delete (admin): deleted", head.deleted, True)
        checks.ok("api get after delete (admin): deleted_at set", bool(getattr(head, "deleted_at",
                                                                               None)), head)
        try:
            b"".join(gc.images.data(st["image2"]))
            checks.ok("api data of a deleted image is refused", False, "the server sent data")
        except exc.HTTPNotFound:
            checks.ok("api data of a deleted image is refused (404)", True)
        shared = [x.image_id for x in m.list(member=tx)]
        checks.equal("api shared images drop the deleted image", shared, [st["image1"]])
        all_ids = [i.id for i in gc.images.list(is_public=None)]
        checks.ok("api list omits the deleted image", st["image2"] not in all_ids)
        try:
            m.list(image=st["image2"])
            checks.ok("api members of a deleted image are refused", False, "the server answered")
        except exc.HTTPNotFound:
            checks.ok("api members of a deleted image are refused (404)", True)
        try:
            gc.images.create(id=st["image2"], name="reuse")
            checks.ok("api a deleted image's id is never reused", False, "the server accepted it")
        except exc.HTTPConflict:
            checks.ok("api a deleted image's id is never reused (409)", True)

    for i, part in enumerate([part_0, part_1, part_2, part_3, part_4, part_5, part_6, part_7, part_8, part_9, part_10]):
        step(checks, f"api part {i + 1}: {part.__doc__}", part)


def wait_ready(endpoint):
    try:
        with urllib.request.urlopen(endpoint.rstrip("/") + "/versions", timeout=5) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", required=True)
    args = parser.parse_args()
    endpoint = args.endpoint.rstrip("/") + "/"

    checks = Checks()
    if not checks.ok("gateway answers /versions", wait_ready(endpoint)):
        print(f"{checks.passed} passed, {checks.failed} failed")
        return 1

    gc = Client("1", endpoint=endpoint, token=TOKEN)
    cli = Cli(endpoint)
    batch_id = uuid.uuid4().hex[:12]
    work = tempfile.mkdtemp(prefix="glance-interop-")
    try:
        paged_ids = step(checks, "api create 30 public images", lambda: make_paged_images(
            gc, batch_id)) or []
        checks.equal("api created the paging batch", len(paged_ids), PAGED_IMAGES)
        step(checks, "api section", lambda: api_checks(checks, gc, endpoint, work, batch_id,
                                                       paged_ids))
        step(checks, "cli section", lambda: cli_checks(checks, cli, gc, work, batch_id))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"{checks.passed} passed, {checks.failed} failed")
    return 0 if checks.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
