// The request lines `relayd policy pin|unpin|forget|reprobe` hand to the
// daemon: every change survives the trip, free text whatever it holds,
// and a hostile or damaged line is no request at all.
import Testing
@testable import RelayQueue

@Suite struct LearnedRequestLines {
    @Test(arguments: [
        LearnedChange.pin(domain: "bank.example", level: "verify", until: 1_798_675_200, reason: "contract §4: TLS\nonly", by: "root (sudo by alice)"),
        .pin(domain: "bank.example", level: "forced", until: nil, reason: "", by: ""),
        .unpin(domain: "bank.example", by: "bob"),
        .forget(domain: "partner.example", by: "carol smith"),
        .reprobe(domain: "partner.example", by: "ops"),
    ])
    func roundTrip(_ change: LearnedChange) {
        let line = QueueRequest.learned(change).encode()
        #expect(!line.contains("\n"))
        #expect(QueueRequest.decode(line) == .learned(change))
    }

    @Test(arguments: [
        "learned", "learned pin", "learned pin bank.example verify", "learned pin bank.example verify soon + +",
        "learned pin bank.example verify -5 + +", "learned pin bank.example verify - +ZZ +", "learned unpin bank.example",
        "learned forget bank.example a b", "learned drop bank.example ops", "learned reprobe",
    ])
    func refusesDamagedLines(_ line: String) {
        #expect(QueueRequest.decode(line) == nil)
    }

    @Test func domainsAreNormalised() {
        #expect(QueueRequest.decode("learned forget Bank.Example. ops") == .learned(.forget(domain: "bank.example", by: "ops")))
    }
}
