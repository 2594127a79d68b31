import Foundation

/// Encodes any `Encodable` straight into a `JSONValue` tree, with the same results as `WireCoding.encoder()` followed
/// by decoding the text as a `JSONValue` (dates as RFC 3339 strings, integers as numbers), but without the text: a
/// fault's plan is converted on every apply, and decoding a `JSONValue` from text costs a thrown error per probe.
struct JSONValueEncoder {
    func encode(_ value: some Encodable) throws -> JSONValue {
        let root = Box()
        try JSONValueEncoding.encode(value, into: root, path: [])
        return root.value ?? .object([:])
    }
}

/// A node under construction (containers are filled after they are handed out, so they are references).
private final class Box {
    enum Node {
        case value(JSONValue)
        case object([String: Box], [String])
        case array([Box])
    }
    var node: Node?

    var value: JSONValue? {
        switch node {
        case nil: return nil
        case .value(let v): return v
        case .object(let children, _): return .object(children.compactMapValues(\.value))
        case .array(let items): return .array(items.map { $0.value ?? .null })
        }
    }

    func object() -> Box {
        if case .object = node {} else { node = .object([:], []) }
        return self
    }
    func child(_ key: String) -> Box {
        guard case .object(var children, var order) = node else { return Box() }
        if let existing = children[key] { return existing }
        let b = Box()
        children[key] = b
        order.append(key)
        node = .object(children, order)
        return b
    }
    func append() -> Box {
        if case .array = node {} else { node = .array([]) }
        guard case .array(var items) = node else { return Box() }
        let b = Box()
        items.append(b)
        node = .array(items)
        return b
    }
    var count: Int {
        if case .array(let items) = node { return items.count }
        return 0
    }
}

private enum JSONValueEncoding {
    static func encode(_ value: some Encodable, into box: Box, path: [any CodingKey]) throws {
        switch value {
        case let d as Date:
            box.node = .value(.string(RFC3339.format(d)))
        case let j as JSONValue:
            box.node = .value(j)
        case let u as URL:
            box.node = .value(.string(u.absoluteString))
        case let d as Data:
            box.node = .value(.string(d.base64EncodedString()))
        default:
            try value.encode(to: ValueEncoder(box: box, codingPath: path))
        }
    }

    static func number<T: BinaryInteger>(_ v: T) -> JSONValue { .number(Double(v)) }

    static func floating(_ v: Double, _ path: [any CodingKey]) throws -> JSONValue {
        guard v.isFinite else {
            throw EncodingError.invalidValue(v, .init(codingPath: path, debugDescription: "\(v) is not representable in JSON"))
        }
        return .number(v)
    }
}

private struct ValueEncoder: Encoder {
    let box: Box
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
        KeyedEncodingContainer(Keyed<Key>(box: box.object(), codingPath: codingPath))
    }
    func unkeyedContainer() -> any UnkeyedEncodingContainer { Unkeyed(box: box, codingPath: codingPath) }
    func singleValueContainer() -> any SingleValueEncodingContainer { Single(box: box, codingPath: codingPath) }
}

private struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let box: Box
    let codingPath: [any CodingKey]

    mutating func encodeNil(forKey key: Key) throws { box.child(key.stringValue).node = .value(.null) }
    mutating func encode(_ value: Bool, forKey key: Key) throws { box.child(key.stringValue).node = .value(.bool(value)) }
    mutating func encode(_ value: String, forKey key: Key) throws { box.child(key.stringValue).node = .value(.string(value)) }
    mutating func encode(_ value: Double, forKey key: Key) throws {
        box.child(key.stringValue).node = .value(try JSONValueEncoding.floating(value, codingPath + [key]))
    }
    mutating func encode(_ value: Float, forKey key: Key) throws { try encode(Double(value), forKey: key) }
    mutating func encode(_ value: Int, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: Int8, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: Int16, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: Int32, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: Int64, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: UInt, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: UInt8, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: UInt16, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: UInt32, forKey key: Key) throws { set(key, value) }
    mutating func encode(_ value: UInt64, forKey key: Key) throws { set(key, value) }
    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
        try JSONValueEncoding.encode(value, into: box.child(key.stringValue), path: codingPath + [key])
    }
    private func set<T: BinaryInteger>(_ key: Key, _ v: T) { box.child(key.stringValue).node = .value(JSONValueEncoding.number(v)) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type, forKey key: Key) -> KeyedEncodingContainer<NestedKey> {
        KeyedEncodingContainer(Keyed<NestedKey>(box: box.child(key.stringValue).object(), codingPath: codingPath + [key]))
    }
    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
        let child = box.child(key.stringValue)
        return Unkeyed(box: child, codingPath: codingPath + [key])
    }
    mutating func superEncoder() -> any Encoder { ValueEncoder(box: box.child("super"), codingPath: codingPath) }
    mutating func superEncoder(forKey key: Key) -> any Encoder { ValueEncoder(box: box.child(key.stringValue), codingPath: codingPath + [key]) }
}

private struct Unkeyed: UnkeyedEncodingContainer, ScalarSink {
    let box: Box
    let codingPath: [any CodingKey]
    var count: Int { box.count }

    init(box: Box, codingPath: [any CodingKey]) {
        self.box = box
        self.codingPath = codingPath
        if case .array = box.node {} else { box.node = .array([]) }
    }

    func put(_ value: JSONValue) { box.append().node = .value(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try JSONValueEncoding.encode(value, into: box.append(), path: codingPath) }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type) -> KeyedEncodingContainer<NestedKey> {
        KeyedEncodingContainer(Keyed<NestedKey>(box: box.append().object(), codingPath: codingPath))
    }
    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
        let child = box.append()
        return Unkeyed(box: child, codingPath: codingPath)
    }
    mutating func superEncoder() -> any Encoder { ValueEncoder(box: box.append(), codingPath: codingPath) }
}

private struct Single: SingleValueEncodingContainer, ScalarSink {
    let box: Box
    let codingPath: [any CodingKey]

    func put(_ value: JSONValue) { box.node = .value(value) }
    mutating func encode<T: Encodable>(_ value: T) throws { try JSONValueEncoding.encode(value, into: box, path: codingPath) }
}

/// The scalar half of an unkeyed or single-value container: every scalar becomes one `JSONValue` handed to `put`.
private protocol ScalarSink {
    var codingPath: [any CodingKey] { get }
    func put(_ value: JSONValue)
}

extension ScalarSink {
    func encodeNil() throws { put(.null) }
    func encode(_ value: Bool) throws { put(.bool(value)) }
    func encode(_ value: String) throws { put(.string(value)) }
    func encode(_ value: Double) throws { put(try JSONValueEncoding.floating(value, codingPath)) }
    func encode(_ value: Float) throws { put(try JSONValueEncoding.floating(Double(value), codingPath)) }
    func encode(_ value: Int) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: Int8) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: Int16) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: Int32) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: Int64) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: UInt) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: UInt8) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: UInt16) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: UInt32) throws { put(JSONValueEncoding.number(value)) }
    func encode(_ value: UInt64) throws { put(JSONValueEncoding.number(value)) }
}
