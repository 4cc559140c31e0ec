// The TLS engine hands writes to OpenSSL, and takes ciphertext out of its
// memory BIO, in pieces: no count ever reaches Int32, and a write of any
// size arrives whole.
import Testing
@testable import RelayModel
@testable import RelayTLS
import RelayTestSupport

@Suite struct TLSWritePieces {
    @Test("a write larger than one piece arrives whole", arguments: [TLSConnection.maxPiece - 1, TLSConnection.maxPiece + 1, 3 * TLSConnection.maxPiece + 17])
    func largeWrite(_ size: Int) throws {
        let client = try TLSConnection(context: try makeClientContext(), options: .init(serverName: "mx.example.test"))
        let server = try TLSConnection(context: try makeServerContext())
        let pump = TLSPump(client: client, server: server)
        let outcome = pump.handshake()
        #expect(outcome.client == .complete && outcome.server == .complete)
        let payload = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try client.writePlaintext(payload)
        server.receiveFromNetwork(client.takeNetworkBytes())
        var got: [UInt8] = []
        while got.count < size, case .data(let d) = server.readPlaintext(), !d.isEmpty { got += d }
        #expect(got == payload)
    }
}
