#!/usr/bin/env python3
"""Writes golden protobuf bytes for the wire-compatibility test (Tests/CosiMessagesTests/Golden).

An independent implementation: Python's `protobuf` package, with the COSI v1alpha1 schema
built here from field numbers (no protoc, no files from Protos/). Run:

    pip install protobuf && python3 scripts/golden/make_golden.py

The Swift test builds the same values and checks that our bytes equal these, and that these
bytes decode to the same values.
"""
import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf import timestamp_pb2  # registers google/protobuf/timestamp.proto

F = descriptor_pb2.FieldDescriptorProto
OUT = os.path.join(os.path.dirname(__file__), "..", "..", "Tests", "CosiMessagesTests", "Golden")


def field(msg, name, number, ftype, label=F.LABEL_OPTIONAL, type_name=None, proto3_optional=False):
    f = msg.field.add(name=name, number=number, type=ftype, label=label)
    if type_name:
        f.type_name = type_name
    if proto3_optional:
        f.proto3_optional = True
        f.oneof_index = len(msg.oneof_decl)
        msg.oneof_decl.add(name="_" + name)
    return f


def map_entry(msg, entry_name):
    entry = msg.nested_type.add(name=entry_name)
    entry.options.map_entry = True
    field(entry, "key", 1, F.TYPE_STRING)
    field(entry, "value", 2, F.TYPE_STRING)
    return entry


def build_pool():
    fd = descriptor_pb2.FileDescriptorProto(name="cosi_golden.proto", package="cosi.resource", syntax="proto3")
    fd.dependency.append("google/protobuf/timestamp.proto")

    md = fd.message_type.add(name="Metadata")
    for i, name in enumerate(["namespace", "type", "id", "version", "owner", "phase"], start=1):
        field(md, name, i, F.TYPE_STRING)
    field(md, "created", 7, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    field(md, "updated", 8, F.TYPE_MESSAGE, type_name=".google.protobuf.Timestamp")
    field(md, "finalizers", 9, F.TYPE_STRING, F.LABEL_REPEATED)
    map_entry(md, "LabelsEntry")
    map_entry(md, "AnnotationsEntry")
    field(md, "labels", 10, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".cosi.resource.Metadata.LabelsEntry")
    field(md, "annotations", 11, F.TYPE_MESSAGE, F.LABEL_REPEATED, ".cosi.resource.Metadata.AnnotationsEntry")

    spec = fd.message_type.add(name="Spec")
    field(spec, "proto_spec", 1, F.TYPE_BYTES)
    field(spec, "yaml_spec", 2, F.TYPE_STRING)

    res = fd.message_type.add(name="Resource")
    field(res, "metadata", 1, F.TYPE_MESSAGE, type_name=".cosi.resource.Metadata")
    field(res, "spec", 2, F.TYPE_MESSAGE, type_name=".cosi.resource.Spec")

    et = fd.enum_type.add(name="EventType")
    for i, name in enumerate(["CREATED", "UPDATED", "DESTROYED", "BOOTSTRAPPED", "ERRORED", "NOOP"]):
        et.value.add(name=name, number=i)

    ev = fd.message_type.add(name="Event")
    field(ev, "resource", 1, F.TYPE_MESSAGE, type_name=".cosi.resource.Resource")
    field(ev, "event_type", 2, F.TYPE_ENUM, type_name=".cosi.resource.EventType")
    field(ev, "old", 3, F.TYPE_MESSAGE, type_name=".cosi.resource.Resource")
    field(ev, "error", 4, F.TYPE_STRING, proto3_optional=True)
    field(ev, "bookmark", 5, F.TYPE_BYTES, proto3_optional=True)

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(timestamp_pb2.DESCRIPTOR.serialized_pb)
    pool.Add(fd)
    return pool


def fill_resource(res, version, phase, yaml):
    m = res.metadata
    m.namespace = "network"
    m.type = "HostnameSpecs.net.talos.dev"
    m.id = "hostname"
    m.version = version
    m.owner = "network.HostnameSpecController"
    m.phase = phase
    m.created.seconds = 1_700_000_000
    m.created.nanos = 123_456_789
    m.updated.seconds = 1_700_000_100
    m.updated.nanos = 42
    m.finalizers.extend(["network.HostnameController", "ünïcode-finalizer"])
    m.labels["app"] = "cosi"
    m.labels["tier"] = "node"
    m.labels["zone"] = "eu-1"
    m.annotations["note"] = "golden bytes"
    m.annotations["empty"] = ""
    res.spec.proto_spec = bytes(range(0, 256, 7))
    res.spec.yaml_spec = yaml


def main():
    pool = build_pool()
    Resource = message_factory.GetMessageClass(pool.FindMessageTypeByName("cosi.resource.Resource"))
    Event = message_factory.GetMessageClass(pool.FindMessageTypeByName("cosi.resource.Event"))

    res = Resource()
    fill_resource(res, "3", "running", "hostname: talos-1\ndomainname: example.org\n")

    old = Resource()
    fill_resource(old, "2", "running", "hostname: talos-0\n")

    ev = Event()
    ev.resource.CopyFrom(res)
    ev.event_type = 1  # UPDATED
    ev.old.CopyFrom(old)
    ev.error = ""  # present but empty: explicit presence must survive
    ev.bookmark = b"\x00\x00\x00\x00\x00\x00\x30\x39"

    os.makedirs(OUT, exist_ok=True)
    for name, msg in [("resource", res), ("event", ev)]:
        data = msg.SerializeToString(deterministic=True)
        with open(os.path.join(OUT, name + ".bin"), "wb") as f:
            f.write(data)
        print(f"{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
