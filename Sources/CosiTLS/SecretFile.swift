#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

// Certificates and keys are files; these helpers write them so that a private key is never
// readable by others, even for an instant (the mode is set at creation, not afterwards).

/// Whether a file exists at `path`.
public func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }

/// Writes a file created with `mode` (so a key is never readable by others, even briefly).
public func writeFile(_ text: String, to path: String, mode: mode_t) throws {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)
    guard fd >= 0 else {
        throw TLSError(code: .invalidMaterial, message: "cannot create \(path): \(String(cString: strerror(errno)))")
    }
    defer { close(fd) }
    fchmod(fd, mode)
    let bytes = Array(text.utf8)
    var offset = 0
    while offset < bytes.count {
        let written = bytes[offset...].withUnsafeBytes { systemWrite(fd, $0.baseAddress, $0.count) }
        guard written > 0 else {
            throw TLSError(code: .invalidMaterial, message: "cannot write \(path): \(String(cString: strerror(errno)))")
        }
        offset += written
    }
}


// `write` unqualified would name a method in some scopes; the C library's, on either system.
#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif
