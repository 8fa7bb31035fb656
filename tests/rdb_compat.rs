//! An RDB written by the first entry encoding (type `tcache-en`, encver 1) must
//! keep loading: tests/fixtures/entries-encver1.rdb was saved by Redis 7.0.15
//! with this module. Expiry times in it are absolute (about 2036), one entry has
//! none.

mod common;

use common::tc::{assert_tag, tags_of, tagscan_all};
use common::*;

#[test]
fn rdb_written_by_encoding_version_1_still_loads() {
    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/entries-encver1.rdb");
    let mut s = Server::builder().arg("dbfilename", "fixture.rdb").start();
    std::fs::copy(&fixture, s.dir.join("fixture.rdb")).expect("copy fixture");
    s.restart();
    let mut c = s.conn();
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 4);
    assert_eq!(
        c.q(&["TCACHE.GET", "report:1"]).as_bytes(),
        br#"{"risk_score":7}"#
    );
    assert_eq!(
        c.cmd(&[b"TCACHE.GET", b"bin:\x00\xff"]).as_bytes(),
        b"\x00\x01\xfe"
    );
    assert_eq!(
        tags_of(&mut c, b"bin:\x00\xff"),
        Some(vec![b"reports".to_vec(), b"\xc3\x28".to_vec()])
    );
    assert_eq!(c.q(&["TTL", "forever"]).as_int(), -1);
    assert!(c.q(&["TTL", "report:1"]).as_int() > 0);
    assert_eq!(
        tagscan_all(&mut c, b"reports"),
        vec![
            b"bin:\x00\xff".to_vec(),
            b"report:1".to_vec(),
            b"report:2".to_vec()
        ]
    );
    assert_tag(&mut c, "store:1", &["report:1"]);
    assert!(c.q(&["SELECT", "3"]).is_ok());
    assert_tag(&mut c, "store:1", &["other:1"]);
    assert!(c.q(&["SELECT", "0"]).is_ok());
    assert_eq!(c.q(&["TCACHE.INVALTAG", "reports"]).as_int(), 3);
    assert_eq!(c.q(&["DBSIZE"]).as_int(), 1);
}
