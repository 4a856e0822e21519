#!/usr/bin/env python3
"""Generates Swift value types and their protobuf-c bridges for Protos/ (called by scripts/gen-protos).

Usage: gen-swift-messages.py MESSAGES_DIR RPC_DIR. Writes one file per .proto: the RPC envelope
(cosi/rpc/v1/rpc.proto) into RPC_DIR (Sources/CosiRPC/Generated), everything else, with
google/protobuf/timestamp.proto, into MESSAGES_DIR (Sources/CosiMessages/Generated). Comments
written directly above a message, enum or field become its doc comment.

Two messages are written by hand in Sources/CosiMessages/Resource/Resource.swift, because
generation cannot express them, and are referred to by their names:
- `cosi.resource.Resource` keeps non-optional `metadata` and `spec` and records whether the bytes
  carried them (presence outside the value);
- `cosi.resource.Event` names its `event_type` field `type` and carries a shared encoding cache
  that is not part of its value.

The parser understands the subset of proto3 that Protos/ uses: messages (nested), enums,
scalar/message/enum fields, repeated fields, map<string, string>, one-field oneofs standing for
proto3 `optional`, and `reserved`.
"""
import os
import re
import sys

HANDWRITTEN = {
    "cosi.resource.Resource": "Resource",
    "cosi.resource.Event": "Event",
}
# Protos read from the system (Debian: libprotobuf-dev), generated like ours.
SYSTEM_PROTOS = ["google/protobuf/timestamp.proto"]
SYSTEM_ROOT = "/usr/include"
# Where each file's Swift goes ("rpc" or "messages") and the C module of its protoc-c output.
RPC_FILES = {"cosi/rpc/v1/rpc.proto"}
# Swift namespaces per package (empty: top level).
NAMESPACE = {"cosi.resource": "", "cosi.resource.meta": "Meta", "cosi.runtime": "Runtime", "cosi.rpc.v1": "Envelope", "google.protobuf": ""}
SCALARS = {
    "string": ("String", '""'), "bytes": ("[UInt8]", "[]"), "bool": ("Bool", "false"),
    "int32": ("Int32", "0"), "uint32": ("UInt32", "0"), "int64": ("Int64", "0"), "uint64": ("UInt64", "0"),
}
C_KEYWORDS = {"namespace", "class", "default", "register", "auto", "char", "const", "delete", "new", "operator", "template", "this", "union"}


ACRONYMS = {"id": "ID", "ids": "IDs", "ms": "MS"}


def camel(name, upper=False):
    """snake_case -> camelCase; trailing words that are acronyms are upper-cased (last_stream_id
    -> lastStreamID, timeout_ms -> timeoutMS), as Swift's API guidelines spell them."""
    parts = name.split("_")
    out = parts[0] + "".join(ACRONYMS.get(p, p[:1].upper() + p[1:]) for p in parts[1:])
    if upper:
        out = out[:1].upper() + out[1:]
    return out


def c_lower(name):
    """protoc-c's CamelCase -> lower_case (an underscore before an upper after a lower)."""
    out = ""
    prev_lower = False
    for ch in name:
        if ch.isupper() and prev_lower:
            out += "_"
        out += ch.lower()
        prev_lower = ch.islower() or ch.isdigit()
    return out


class Field:
    def __init__(self, name, number, ftype, repeated=False, is_map=False, optional=False, doc=None):
        self.name, self.number, self.type = name, number, ftype
        self.repeated, self.is_map, self.optional = repeated, is_map, optional
        self.doc = doc or []


class Message:
    def __init__(self, name, full, parent=None, doc=None):
        self.name, self.full, self.parent = name, full, parent
        self.fields, self.messages, self.enums = [], [], []
        self.doc = doc or []


class Enum:
    def __init__(self, name, full, doc=None):
        self.name, self.full, self.values = name, full, []
        self.doc = doc or []


def tokenize(text):
    """The significant tokens, and for each the comment lines written directly above it (a blank
    line in between detaches a comment)."""
    tokens, docs, pending = [], [], []
    for t in re.findall(r"//[^\n]*|\n[ \t]*\n|[A-Za-z_][\w.]*|\d+|[{}=;<>,\[\]()]|\"[^\"]*\"", text):
        if t.startswith("//"):
            pending.append(t[2:].strip())
        elif t.startswith("\n"):
            pending = []
        else:
            tokens.append(t)
            docs.append(pending)
            pending = []
    return tokens, docs


def parse(path, root):
    text = open(os.path.join(root, path)).read()
    tokens, docs = tokenize(text)
    package = ""
    top_messages, top_enums = [], []
    i = 0

    def parse_enum(i, scope):
        name = tokens[i + 1]
        enum = Enum(name, scope + "." + name, docs[i])
        i += 3
        while tokens[i] != "}":
            if tokens[i] in ("option", "reserved"):
                while tokens[i] != ";":
                    i += 1
                i += 1
                continue
            vname, number = tokens[i], int(tokens[i + 2])
            enum.values.append((vname, number))
            while tokens[i] != ";":
                i += 1
            i += 1
        return i + 1, enum

    def parse_field(i, msg, optional=False, doc=None):
        doc = doc if doc is not None else docs[i]
        repeated = False
        if tokens[i] == "repeated":
            repeated = True
            i += 1
        if tokens[i] == "map":
            # map < string , string > name = N ;
            assert tokens[i + 2] == "string" and tokens[i + 4] == "string", "only map<string,string> is supported"
            name, number = tokens[i + 6], int(tokens[i + 8])
            msg.fields.append(Field(name, number, "string", is_map=True, doc=doc))
            while tokens[i] != ";":
                i += 1
            return i + 1
        ftype, name, number = tokens[i], tokens[i + 1], int(tokens[i + 3])
        msg.fields.append(Field(name, number, ftype, repeated=repeated, optional=optional, doc=doc))
        while tokens[i] != ";":
            i += 1
        return i + 1

    def parse_message(i, scope, parent=None):
        name = tokens[i + 1]
        msg = Message(name, scope + "." + name, parent, docs[i])
        i += 3
        while tokens[i] != "}":
            t = tokens[i]
            if t == "message":
                i, sub = parse_message(i, msg.full, msg)
                msg.messages.append(sub)
            elif t == "enum":
                i, sub = parse_enum(i, msg.full)
                msg.enums.append(sub)
            elif t in ("reserved", "option"):
                while tokens[i] != ";":
                    i += 1
                i += 1
            elif t == "oneof":
                # A one-field oneof named _x stands for proto3 `optional x`.
                doc = docs[i]
                i += 3
                i = parse_field(i, msg, optional=True, doc=doc or docs[i])
                assert tokens[i] == "}", "only one-field oneofs (proto3 optional) are supported"
                i += 1
            else:
                i = parse_field(i, msg)
        return i + 1, msg

    while i < len(tokens):
        t = tokens[i]
        if t == "package":
            package = tokens[i + 1]
            i += 3
        elif t == "message":
            i, msg = parse_message(i, package)
            top_messages.append(msg)
        elif t == "enum":
            i, enum = parse_enum(i, package)
            top_enums.append(enum)
        elif t == "service":
            depth = 0
            while True:
                if tokens[i] == "{":
                    depth += 1
                elif tokens[i] == "}":
                    depth -= 1
                    if depth == 0:
                        break
                i += 1
            i += 1
        else:
            while tokens[i] != ";":
                i += 1
            i += 1
    return package, top_messages, top_enums


class Generator:
    def __init__(self):
        self.types = dict(HANDWRITTEN)  # full proto name -> Swift name
        self.enums = set()
        self.packages = {}

    def register(self, package, messages, enums):
        ns = NAMESPACE.get(package, "")

        def swift_name(full):
            rel = full[len(package) + 1:]
            return (ns + "." if ns else "") + rel

        def walk(msgs, enums_):
            for e in enums_:
                self.types.setdefault(e.full, swift_name(e.full))
                self.enums.add(e.full)
            for m in msgs:
                self.types.setdefault(m.full, swift_name(m.full))
                walk(m.messages, m.enums)

        walk(messages, enums)

    def resolve(self, ftype, scope):
        if ftype in SCALARS:
            return ftype
        # Relative lookup: innermost scope outwards.
        parts = scope.split(".")
        for k in range(len(parts), 0, -1):
            candidate = ".".join(parts[:k]) + "." + ftype
            if candidate in self.types:
                return candidate
        if ftype in self.types:
            return ftype
        raise SystemExit(f"gen-swift-messages: unknown type {ftype} in {scope}")

    def c_struct(self, full):
        parts = full.split(".")
        # Package parts are capitalised, message names kept.
        return "__".join(p[:1].upper() + p[1:] for p in parts)

    def c_prefix(self, full):
        return "__".join(c_lower(p) for p in full.split("."))

    def emit_file(self, package, messages, enums, proto_path, c_module, source):
        ns = NAMESPACE.get(package, "")
        out = [
            f"// Generated by scripts/gen-protos from {source}. Do not edit.",
            "",
            f"import {c_module}",
            "import CProtobufC",
            "import CosiProtobuf",
            "",
        ]
        body = []
        for e in enums:
            if e.full not in HANDWRITTEN:
                body += self.emit_enum(e)
        for m in messages:
            if m.full not in HANDWRITTEN:
                body += self.emit_message(m)
        if ns:
            out.append(f"/// Messages of package `{package}`.")
            out.append(f"public enum {ns} {{}}")
            out.append("")
            out.append(f"extension {ns} {{")
            out += ["    " + l if l else "" for l in body]
            out.append("}")
        else:
            out += body
        out.append("")
        out.append("// MARK: - protobuf-c bridges")
        out.append("")
        for m in self.all_messages(messages):
            if m.full not in HANDWRITTEN:
                out += self.emit_bridge(m)
        return "\n".join(out).rstrip() + "\n"

    def all_messages(self, messages):
        for m in messages:
            yield m
            yield from self.all_messages(m.messages)

    @staticmethod
    def doc(lines, fallback=None):
        """Doc comment lines from a proto comment (or the fallback line)."""
        text = lines or ([fallback] if fallback else [])
        return [f"/// {l}".rstrip() for l in text]

    def emit_enum(self, e):
        lines = self.doc(e.doc) + ([
            "///",
        ] if e.doc else []) + [
            f"/// `{e.full}`. Unknown values from newer peers are kept as their number.",
            f"public struct {e.name}: RawRepresentable, Hashable, Sendable {{",
            "    public var rawValue: Int32",
            "    public init(rawValue: Int32) { self.rawValue = rawValue }",
        ]
        for vname, number in e.values:
            swift = camel(vname.lower())
            if swift in ("default", "in", "repeat", "case"):
                swift = f"`{swift}`"
            lines.append(f"    public static let {swift} = {e.name}(rawValue: {number})")
        lines.append("}")
        lines.append("")
        return lines

    def swift_type(self, f, scope):
        if f.is_map:
            return "[String: String]"
        full = self.resolve(f.type, scope)
        base = SCALARS[full][0] if full in SCALARS else self.types[full].split(".", 1)[-1] if False else self.local_name(full)
        if f.repeated:
            return f"[{base}]"
        if f.optional or (full not in SCALARS and full not in self.enums):
            return f"{base}?"
        return base

    def local_name(self, full):
        if full in SCALARS:
            return SCALARS[full][0]
        name = self.types[full]
        return name

    def default(self, f, scope):
        if f.is_map:
            return "[:]"
        full = self.resolve(f.type, scope)
        if f.repeated:
            return "[]"
        if f.optional or (full not in SCALARS and full not in self.enums):
            return "nil"
        if full in self.enums:
            return f"{self.local_name(full)}(rawValue: 0)"
        return SCALARS[full][1]

    def emit_message(self, m):
        lines = self.doc(m.doc) + (["///"] if m.doc else []) + [f"/// `{m.full}`.", f"public struct {m.name}: Hashable, Sendable {{"]
        inner = []
        for e in m.enums:
            inner += self.emit_enum(e)
        for sub in m.messages:
            inner += self.emit_message(sub)
        lines += ["    " + l if l else "" for l in inner]
        if not m.fields:
            lines.append("    public init() {}")
            lines.append("}")
            lines.append("")
            return lines
        for f in m.fields:
            lines += ["    " + l for l in self.doc(f.doc)]
            lines.append(f"    public var {camel(f.name)}: {self.swift_type(f, m.full)}")
        params = ", ".join(f"{camel(f.name)}: {self.swift_type(f, m.full)} = {self.default(f, m.full)}" for f in m.fields)
        lines.append("")
        lines.append(f"    public init({params}) {{")
        for f in m.fields:
            lines.append(f"        self.{camel(f.name)} = {camel(f.name)}")
        lines.append("    }")
        lines.append("}")
        lines.append("")
        return lines

    def emit_bridge(self, m):
        swift = self.types[m.full]
        cs = self.c_struct(m.full)
        cp = self.c_prefix(m.full)
        lines = [
            f"extension {swift}: CMessageBridged {{",
            f"    @usableFromInline package typealias CStruct = {cs}",
            f'    @usableFromInline package static let messageName = "{m.full}"',
            f"    @usableFromInline package static func cInit(_ p: UnsafeMutablePointer<CStruct>) {{ {cp}__init(p) }}",
        ]
        if m.parent is None:
            lines += [
                f"    @usableFromInline package static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? {{ {cp}__unpack(nil, n, d) }}",
                f"    @usableFromInline package static func cFree(_ p: UnsafeMutablePointer<CStruct>) {{ {cp}__free_unpacked(p, nil) }}",
            ]
        else:
            lines += [
                f"    @usableFromInline package static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? {{ unpackNested({cp}__init, n, d) }}",
                "    @usableFromInline package static func cFree(_ p: UnsafeMutablePointer<CStruct>) { freeNested(p) }",
            ]
        lines.append("")
        reads, writes = [], []
        for f in m.fields:
            sw = camel(f.name)
            cf = f.name + ("_" if f.name in C_KEYWORDS else "")
            full = None if f.is_map else self.resolve(f.type, m.full)
            if f.is_map:
                entry = self.c_prefix(m.full) + "__" + c_lower(camel(f.name, upper=True) + "Entry") + "__init"
                reads.append(f"{sw}: swiftMap(c.pointee.n_{cf}, c.pointee.{cf}) {{ ($0.pointee.key, $0.pointee.value) }}")
                writes.append(f"(c.pointee.n_{cf}, c.pointee.{cf}) = arena.map({sw}, initEntry: {entry}) {{ $0.pointee.key = $1; $0.pointee.value = $2 }}")
                continue
            if f.optional:
                case = f"{cp.upper()}___{f.name.upper()}_{f.name.upper()}"
                read = self.read_scalar(full, f"c.pointee.{cf}")
                reads.append(f"{sw}: c.pointee._{f.name}_case == {case} ? {read} : nil")
                writes.append(f"if let {sw} {{ c.pointee._{f.name}_case = {case}; c.pointee.{cf} = {self.write_scalar(full, sw)} }}")
                continue
            if f.repeated:
                if full == "string":
                    reads.append(f"{sw}: swiftStrings(c.pointee.n_{cf}, c.pointee.{cf})")
                    writes.append(f"c.pointee.n_{cf} = {sw}.count; c.pointee.{cf} = arena.strings({sw})")
                elif full in SCALARS or full in self.enums:
                    raise SystemExit(f"gen-swift-messages: repeated {full} is not supported ({m.full}.{f.name})")
                else:
                    reads.append(f"{sw}: swiftMessages(c.pointee.n_{cf}, c.pointee.{cf}, as: {self.local_name(full)}.self)")
                    writes.append(f"c.pointee.n_{cf} = {sw}.count; c.pointee.{cf} = arena.messages({sw})")
                continue
            if full in SCALARS or full in self.enums:
                reads.append(f"{sw}: {self.read_scalar(full, f'c.pointee.{cf}')}")
                writes.append(f"c.pointee.{cf} = {self.write_scalar(full, sw)}")
            else:
                reads.append(f"{sw}: c.pointee.{cf}.map {{ {self.local_name(full)}(c: $0) }}")
                writes.append(f"c.pointee.{cf} = {sw}.map {{ arena.message($0) }}")
        if reads:
            lines.append("    @usableFromInline package init(c: UnsafePointer<CStruct>) {")
            lines.append("        self.init(")
            lines.append(",\n".join("            " + r for r in reads))
            lines.append("        )")
            lines.append("    }")
        else:
            lines.append("    @usableFromInline package init(c: UnsafePointer<CStruct>) { self.init() }")
        lines.append("")
        if writes:
            lines.append("    @usableFromInline package func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {")
            lines += ["        " + w for w in writes]
            lines.append("    }")
        else:
            lines.append("    @usableFromInline package func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {}")
        lines.append("}")
        lines.append("")
        return lines

    def read_scalar(self, full, expr):
        if full in self.enums:
            return f"{self.local_name(full)}(rawValue: Int32(bitPattern: {expr}.rawValue))"
        return {
            "string": f"swiftString({expr})", "bytes": f"swiftBytes({expr})", "bool": f"{expr} != 0",
        }.get(full, expr)

    def write_scalar(self, full, expr):
        if full in self.enums:
            return f"{self.c_struct(full)}(rawValue: UInt32(bitPattern: {expr}.rawValue))"
        return {
            "string": f"arena.string({expr})", "bytes": f"arena.bytes({expr})", "bool": f"{expr} ? 1 : 0",
        }.get(full, expr)


def main():
    messages_dir, rpc_dir = sys.argv[1], sys.argv[2]
    root = "Protos"
    protos = [(path, SYSTEM_ROOT) for path in SYSTEM_PROTOS] + sorted(
        (os.path.relpath(os.path.join(d, f), root), root)
        for d, _, files in os.walk(root) for f in files if f.endswith(".proto")
    )
    gen = Generator()
    parsed = []
    for path, base in protos:
        package, messages, enums = parse(path, base)
        gen.register(package, messages, enums)
        parsed.append((path, base, package, messages, enums))
    for d in (messages_dir, rpc_dir):
        os.makedirs(d, exist_ok=True)
    for path, base, package, messages, enums in parsed:
        rpc = path in RPC_FILES
        name = os.path.splitext(path)[0].replace("/", "_") + ".pb.swift"
        source = f"Protos/{path}" if base == root else f"{path} ({base})"
        text = gen.emit_file(package, messages, enums, path, "CCosiRPCProto" if rpc else "CCosiProto", source)
        with open(os.path.join(rpc_dir if rpc else messages_dir, name), "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
