// Outbound connection reuse (Postfix's connection cache): after a
// transaction, a connection may wait a few seconds for the next message to
// the same next hop, which then starts with RSET instead of a new TCP
// connection, greeting, EHLO and TLS handshake.
//
// The key is everything the policy decided for the connection — address,
// port, the TLS requirement, whether verification was required and for
// which host name, and the AUTH identity — so a connection is only ever
// reused under exactly the policy it was opened with: a plaintext
// connection can never carry mail for a forced domain.
import RelayIO
import RelayModel
import RelaySMTP
import RelayTLS
//
// The table of idle connections is behind a lock: deliveries on many
// queues take and offer connections. Each kept connection itself is
// touched only on its own queue (its IdleWatcher is its delegate there).
import Dispatch
import RelaySync

public final class ConnectionPool: Sendable {
    public struct Key: Hashable, Sendable {
        let address: IPAddress
        let port: UInt16
        let tls: TLSRequirement
        let verified: Bool
        let host: String
        let user: String?
        /// The DANE records the connection was authenticated by (nil: none).
        let dane: DANEPolicy?
    }

    struct Entry: Sendable {
        let connection: Connection
        let extensions: [String: String]
        let tlsActive: Bool
        let uses: Int
        /// The connection's delegate while it is kept (it holds the
        /// delegate weakly, so the entry keeps the watcher alive).
        let watcher: IdleWatcher
    }

    /// Watches an idle connection: the server closing it, talking out of
    /// turn, or the idle time running out all remove it from the pool.
    final class IdleWatcher: ConnectionDelegate, Sendable {
        weak let pool: ConnectionPool?
        let key: Key
        init(pool: ConnectionPool, key: Key) { self.pool = pool; self.key = key }

        func connection(_ connection: Connection, received bytes: [UInt8]) { evict(connection) }
        func connection(_ connection: Connection, tlsEstablished info: TLSSessionInfo) {}
        func connection(_ connection: Connection, tlsFailed failure: TLSFailure) { evict(connection) }
        func connectionTimedOut(_ connection: Connection) {
            if pool?.remove(connection, key: key) ?? true {
                connection.send(Array("QUIT\r\n".utf8))
                connection.close()
            }
        }
        func connectionClosed(_ connection: Connection, reason: String) { _ = pool?.remove(connection, key: key) }

        private func evict(_ connection: Connection) {
            if pool?.remove(connection, key: key) ?? true { connection.abort(reason: "idle connection spoke or failed") }
        }
    }

    public let idleSeconds: Int
    public let maxUses: Int
    private let idle = Locked<[Key: [Entry]]>([:])

    public init(idleSeconds: Int = 5, maxUses: Int = 100) {
        self.idleSeconds = idleSeconds
        self.maxUses = maxUses
    }

    /// An idle connection for this key, now owned by the caller.
    func take(_ key: Key) -> Entry? {
        idle.withLock { idle in
            guard var list = idle[key], !list.isEmpty else { return nil }
            let entry = list.removeLast()
            idle[key] = list.isEmpty ? nil : list
            return entry
        }
    }

    /// Offers a connection after a clean transaction; false if the pool
    /// will not keep it (then the caller says QUIT and closes). Call on the
    /// connection's queue.
    func offer(_ key: Key, connection: Connection, extensions: [String: String], tlsActive: Bool, uses: Int) -> Bool {
        guard uses < maxUses else { return false }
        let watcher = IdleWatcher(pool: self, key: key)
        let entry = Entry(connection: connection, extensions: extensions, tlsActive: tlsActive, uses: uses, watcher: watcher)
        let kept = idle.withLock { idle in
            guard idle[key]?.count ?? 0 < 8 else { return false }
            idle[key, default: []].append(entry)
            return true
        }
        guard kept else { return false }
        connection.delegate = watcher
        connection.setIdleTimeout(seconds: idleSeconds)
        return true
    }

    /// Says QUIT on every kept connection and forgets them all (a reload
    /// replaced this pool, or relayd is stopping).
    public func closeIdle() {
        let entries = idle.withLock { idle in
            defer { idle = [:] }
            return idle.values.flatMap { $0 }
        }
        for entry in entries {
            let connection = entry.connection
            connection.queue.async {
                connection.send(Array("QUIT\r\n".utf8))
                connection.close()
            }
        }
    }

    /// Removes a connection if it is still idle in the pool; false when a
    /// delivery has already taken it.
    func remove(_ connection: Connection, key: Key) -> Bool {
        idle.withLock { idle in
            guard var list = idle[key], let i = list.firstIndex(where: { $0.connection === connection }) else { return false }
            list.remove(at: i)
            idle[key] = list.isEmpty ? nil : list
            return true
        }
    }
}
