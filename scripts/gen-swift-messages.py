#!/usr/bin/env python3
"""Generates Swift value types and their protobuf-c bridges for Protos/ (called by scripts/gen-protos).

Writes one file per .proto into the directory given as the first argument. Messages that
Sources/CosiMessages writes by hand (the resource model and the RPC envelope) are skipped and
referred to by their hand-written names. The parser understands the subset of proto3 that
Protos/ uses: messages (nested), enums, scalar/message/enum fields, repeated fields,
map<string, string>, one-field oneofs standing for proto3 `optional`, and `reserved`.
"""
import os
import re
import sys

HANDWRITTEN = {
    "google.protobuf.Timestamp": "Timestamp",
    "cosi.resource.Metadata": "Metadata",
    "cosi.resource.Spec": "Spec",
    "cosi.resource.Resource": "Resource",
    "cosi.resource.LabelTerm": "LabelTerm",
    "cosi.resource.LabelTerm.Operation": "LabelTerm.Operation",
    "cosi.resource.LabelQuery": "LabelQuery",
    "cosi.resource.IDQuery": "IDQuery",
    "cosi.resource.Event": "Event",
    "cosi.resource.EventType": "EventType",
}
SKIP_FILES = {"cosi/rpc/v1/rpc.proto", "cosi/resource/resource.proto"}
# Swift namespaces per package (empty: top level).
NAMESPACE = {"cosi.resource": "", "cosi.resource.meta": "Meta", "cosi.runtime": "Runtime"}
SCALARS = {
    "string": ("String", '""'), "bytes": ("[UInt8]", "[]"), "bool": ("Bool", "false"),
    "int32": ("Int32", "0"), "uint32": ("UInt32", "0"), "int64": ("Int64", "0"), "uint64": ("UInt64", "0"),
}
C_KEYWORDS = {"namespace", "class", "default", "register", "auto", "char", "const", "delete", "new", "operator", "template", "this", "union"}


def camel(name, upper=False):
    parts = name.split("_")
    out = parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])
    if upper:
        out = out[:1].upper() + out[1:]
    if out in ("id", "ids"):
        return out
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
    def __init__(self, name, number, ftype, repeated=False, is_map=False, optional=False):
        self.name, self.number, self.type = name, number, ftype
        self.repeated, self.is_map, self.optional = repeated, is_map, optional


class Message:
    def __init__(self, name, full, parent=None):
        self.name, self.full, self.parent = name, full, parent
        self.fields, self.messages, self.enums = [], [], []


class Enum:
    def __init__(self, name, full):
        self.name, self.full, self.values = name, full, []


def parse(path, root):
    text = open(os.path.join(root, path)).read()
    text = re.sub(r"//[^\n]*", "", text)
    tokens = re.findall(r"[A-Za-z_][\w.]*|\d+|[{}=;<>,\[\]()]|\"[^\"]*\"", text)
    package = ""
    top_messages, top_enums = [], []
    i = 0

    def parse_enum(i, scope):
        name = tokens[i + 1]
        enum = Enum(name, scope + "." + name)
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

    def parse_field(i, msg, optional=False):
        repeated = False
        if tokens[i] == "repeated":
            repeated = True
            i += 1
        if tokens[i] == "map":
            # map < string , string > name = N ;
            assert tokens[i + 2] == "string" and tokens[i + 4] == "string", "only map<string,string> is supported"
            name, number = tokens[i + 6], int(tokens[i + 8])
            msg.fields.append(Field(name, number, "string", is_map=True))
            while tokens[i] != ";":
                i += 1
            return i + 1
        ftype, name, number = tokens[i], tokens[i + 1], int(tokens[i + 3])
        msg.fields.append(Field(name, number, ftype, repeated=repeated, optional=optional))
        while tokens[i] != ";":
            i += 1
        return i + 1

    def parse_message(i, scope, parent=None):
        name = tokens[i + 1]
        msg = Message(name, scope + "." + name, parent)
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
                i += 3
                i = parse_field(i, msg, optional=True)
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
        self.enums = set(["cosi.resource.EventType", "cosi.resource.LabelTerm.Operation"])
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

    def emit_file(self, package, messages, enums, proto_path):
        ns = NAMESPACE.get(package, "")
        out = [
            f"// Generated by scripts/gen-protos from Protos/{proto_path}. Do not edit.",
            "",
            "import CCosiProto",
            "import CProtobufC",
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

    def emit_enum(self, e):
        lines = [
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
        lines = [f"/// `{m.full}`.", f"public struct {m.name}: Hashable, Sendable {{"]
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
            f"    typealias CStruct = {cs}",
            f'    static let messageName = "{m.full}"',
            f"    static func cInit(_ p: UnsafeMutablePointer<CStruct>) {{ {cp}__init(p) }}",
        ]
        if m.parent is None:
            lines += [
                f"    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? {{ {cp}__unpack(nil, n, d) }}",
                f"    static func cFree(_ p: UnsafeMutablePointer<CStruct>) {{ {cp}__free_unpacked(p, nil) }}",
            ]
        else:
            lines += [
                f"    static func cUnpack(_ n: Int, _ d: UnsafePointer<UInt8>) -> UnsafeMutablePointer<CStruct>? {{ unpackNested({cp}__init, n, d) }}",
                "    static func cFree(_ p: UnsafeMutablePointer<CStruct>) { freeNested(p) }",
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
            lines.append("    init(c: UnsafePointer<CStruct>) {")
            lines.append("        self.init(")
            lines.append(",\n".join("            " + r for r in reads))
            lines.append("        )")
            lines.append("    }")
        else:
            lines.append("    init(c: UnsafePointer<CStruct>) { self.init() }")
        lines.append("")
        if writes:
            lines.append("    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {")
            lines += ["        " + w for w in writes]
            lines.append("    }")
        else:
            lines.append("    func fill(_ c: UnsafeMutablePointer<CStruct>, arena: CArena) {}")
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
    out_dir = sys.argv[1]
    root = "Protos"
    protos = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root) for f in files if f.endswith(".proto")
    )
    gen = Generator()
    parsed = []
    for path in protos:
        package, messages, enums = parse(path, root)
        gen.register(package, messages, enums)
        parsed.append((path, package, messages, enums))
    os.makedirs(out_dir, exist_ok=True)
    for path, package, messages, enums in parsed:
        if path in SKIP_FILES:
            continue
        name = os.path.splitext(path)[0].replace("/", "_") + ".pb.swift"
        with open(os.path.join(out_dir, name), "w") as f:
            f.write(gen.emit_file(package, messages, enums, path))


if __name__ == "__main__":
    main()
