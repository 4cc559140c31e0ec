// The body travels in chunks: ClientRun over a real Connection (a socket
// pair with small buffers, so the socket pushes back and the drained path
// runs), with and without TLS, from memory and from the queue file. A body
// arrives byte-identical; a queue file that fails its check mid-way never
// gets its end of data sent.
import Dispatch
import Foundation
import Testing
@testable import RelayModel
@testable import RelaySMTP
@testable import RelayPolicy
@testable import RelayLog
@testable import RelayTLS
@testable import RelayDNS
@testable import RelayIO
@testable import RelayQueue
@testable import RelayConfig
@testable import RelayDelivery
import RelayTestSupport

struct StreamedRun {
    var result: ClientRunResult?
    var server: ScriptedSMTPServer.Record?
}

func runClient(body: MessageBody, envelope: Envelope, tls: Bool, readDelay: useconds_t = 0) throws -> StreamedRun {
    let pair = smallBufferSocketPair()
    let server = ScriptedSMTPServer(fd: pair.server, tls: tls ? try makeServerContext() : nil, readDelayMicroseconds: readDelay)
    server.start()
    let queue = DispatchQueue(label: "test.clientrun")
    let connection = Connection(fd: pair.client, peer: IPAddress("127.0.0.1")!, queue: queue)
    let config = ClientSessionConfiguration(heloName: "relay.test", tls: tls ? .required : .never,
                                            envelope: envelope, bodySize: body.count)
    let context = try makeClientContext()
    final class Box: @unchecked Sendable { var r: ClientRunResult? }
    let box = Box()
    let finished = DispatchSemaphore(value: 0)
    queue.async {
        ClientRun(configuration: config, body: body, connection: connection, tlsContext: context,
                  tlsOptions: TLSConnection.Options()) { r in
            box.r = r
            finished.signal()
        }.start()
    }
    _ = finished.wait(timeout: .now() + 60)
    return StreamedRun(result: box.r, server: server.finish())
}

@Suite(.serialized) struct StreamedDelivery {
    enum Source: String, CaseIterable, CustomTestStringConvertible {
        case memory, spoolFile
        var testDescription: String { rawValue }
    }

    @Test("a body of many chunks arrives byte-identical", arguments: Source.allCases, [false, true])
    func bigBodyArrivesIntact(_ source: Source, _ tls: Bool) throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: 1_500_000, seed: 11)
        try t.spool.store(m)
        let body: MessageBody = source == .memory ? .memory(m.body) : try t.spool.openMessage(.incoming, m.id).body
        if source == .spoolFile, case .memory = body { Issue.record("expected a streamed body") }
        let run = try runClient(body: body, envelope: m.envelope, tls: tls)
        let result = try #require(run.result)
        let server = try #require(run.server)
        guard case .completed(let replies) = result.outcome else {
            Issue.record("delivery failed: \(result.outcome)")
            return
        }
        #expect(replies[0]?.code == 250)
        #expect(result.bodyFailure == nil)
        #expect(server.usedTLS == tls)
        #expect(server.sawEndOfData)
        let intact = unstuff(server.rawData) == m.body + (m.body.last == 10 ? [] : [13, 10])
        #expect(intact)
    }

    @Test("a slow reader makes the sender wait for the socket, not buffer the body")
    func slowReader() throws {
        let m = bigMessage(bodySize: 600_000, seed: 12)
        let run = try runClient(body: .memory(m.body), envelope: m.envelope, tls: true, readDelay: 2000)
        #expect(run.server?.sawEndOfData == true)
        let intact = run.server.flatMap { unstuff($0.rawData) } == m.body + (m.body.last == 10 ? [] : [13, 10])
        #expect(intact)
    }

    enum Damage: String, CaseIterable, CustomTestStringConvertible {
        case firstChunk, middle, lastByte, endRecord
        var testDescription: String { rawValue }
    }

    @Test("a queue file failing its check mid-send: no end of data, the connection is cut, the file is marked",
          arguments: Damage.allCases)
    func corruptFileNeverEndsTheData(_ damage: Damage) throws {
        let t = try TemporarySpool()
        let m = bigMessage(bodySize: 1_000_000, seed: 13)
        try t.spool.store(m)
        let bodyOffset = QueueFile.encodeHeader(m).count
        let at: Int
        switch damage {
        case .firstChunk: at = bodyOffset + 100
        case .middle: at = bodyOffset + m.body.count / 2
        case .lastByte: at = bodyOffset + m.body.count - 1
        case .endRecord: at = -3
        }
        try t.corrupt(.incoming, m.id, at: at)
        let opened = try t.spool.openMessage(.incoming, m.id)
        guard case .spool(let file) = opened.body else { Issue.record("expected a streamed body"); return }

        let run = try runClient(body: opened.body, envelope: m.envelope, tls: true)
        let result = try #require(run.result)
        let server = try #require(run.server)
        #expect(!server.sawEndOfData, "the end of data was sent for a corrupt body")
        #expect(server.messages == 0)
        #expect(server.rawData.count < DotStuffer.encode(m.body).count)
        #expect(result.bodyFailure != nil)
        #expect(result.outcome == .failed(.connectionLost(stage: .body)))
        #expect(file.failedCheck == .checksumMismatch)
    }
}
