#!/usr/bin/env python3
"""Writes an OCI image-layout tar (one uncompressed layer) from a root file system directory.

usage: mk_oci_image.py ROOTFS OUT.tar IMAGE_REF [CMD_JSON]
Used by runtime-shim/tests/containerd.rs; `ctr image import OUT.tar` loads it (no registry)."""
import hashlib
import io
import json
import os
import sys
import tarfile


def layer_tar(rootfs):
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for top, dirs, files in os.walk(rootfs):
            dirs.sort()
            for name in dirs + sorted(files):
                path = os.path.join(top, name)
                info = tar.gettarinfo(path, os.path.relpath(path, rootfs))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                if info.isreg():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return data.getvalue()


def main():
    rootfs, out, ref = sys.argv[1:4]
    cmd = json.loads(sys.argv[4]) if len(sys.argv) > 4 else ["/bin/sh"]
    blobs = {}

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": digest, "size": len(data)}

    layer = layer_tar(rootfs)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin:/sbin"], "Cmd": cmd, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": dict(mediaType="application/vnd.oci.image.config.v1+json",
                       **blob(json.dumps(config).encode())),
        "layers": [dict(mediaType="application/vnd.oci.image.layer.v1.tar", **blob(layer))],
    }
    index = {
        "schemaVersion": 2,
        "manifests": [dict(mediaType="application/vnd.oci.image.manifest.v1+json",
                           **blob(json.dumps(manifest).encode()),
                           platform={"architecture": "amd64", "os": "linux"},
                           annotations={"io.containerd.image.name": ref,
                                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]})],
    }
    with tarfile.open(out, "w") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        add("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add("index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            add("blobs/sha256/" + digest.split(":")[1], data)


if __name__ == "__main__":
    main()
