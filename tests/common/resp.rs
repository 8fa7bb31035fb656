//! Minimal blocking RESP2/RESP3 client for integration tests (std only).
//!
//! Server errors come back as `Value::Error`; I/O failures (connection closed,
//! reply timeout, protocol garbage) panic with a message naming the port, as
//! they always mean the test failed.

use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Default time `read` waits for a reply before panicking.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// One RESP2/RESP3 reply.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// RESP2 `$-1` / `*-1`, RESP3 `_`.
    Nil,
    /// `:`
    Int(i64),
    /// `$` (streamed `$?` chunks are joined).
    Bulk(Vec<u8>),
    /// `+`
    Simple(String),
    /// `-` and RESP3 blob error `!`.
    Error(String),
    /// `*`
    Array(Vec<Value>),
    /// RESP3 `%`
    Map(Vec<(Value, Value)>),
    /// RESP3 `~`
    Set(Vec<Value>),
    /// RESP3 `>`
    Push(Vec<Value>),
    /// RESP3 `,` kept as sent (`inf`, `-inf`, `nan` included).
    Double(String),
    /// RESP3 `#t` / `#f`
    Bool(bool),
    /// RESP3 `=`: the text after the 3-letter format and `:` (e.g. `txt:`).
    Verbatim(Vec<u8>),
    /// RESP3 `(`
    BigNumber(String),
}

impl Value {
    /// A bulk string value, for comparisons: `assert_eq!(v, Value::bulk("x"))`.
    pub fn bulk(b: impl AsRef<[u8]>) -> Value {
        Value::Bulk(b.as_ref().to_vec())
    }

    #[track_caller]
    pub fn as_int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            other => panic!("expected an integer reply, got {other:?}"),
        }
    }

    /// Bytes of a bulk, simple or verbatim string.
    #[track_caller]
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Bulk(b) | Value::Verbatim(b) => b,
            Value::Simple(s) => s.as_bytes(),
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    /// A bulk/simple/verbatim string, or the text of a double or big number.
    #[track_caller]
    pub fn as_str(&self) -> &str {
        match self {
            Value::Simple(s) | Value::Double(s) | Value::BigNumber(s) => s,
            Value::Bulk(b) | Value::Verbatim(b) => match std::str::from_utf8(b) {
                Ok(s) => s,
                Err(_) => panic!("expected a UTF-8 string reply, got {self:?}"),
            },
            other => panic!("expected a string reply, got {other:?}"),
        }
    }

    #[track_caller]
    pub fn as_f64(&self) -> f64 {
        let s = match self {
            Value::Double(s) => s.as_str(),
            Value::Bulk(_) | Value::Simple(_) => self.as_str(),
            other => panic!("expected a double reply, got {other:?}"),
        };
        match s {
            "inf" | "+inf" => f64::INFINITY,
            "-inf" => f64::NEG_INFINITY,
            _ => s
                .parse()
                .unwrap_or_else(|_| panic!("expected a double reply, got {self:?}")),
        }
    }

    #[track_caller]
    pub fn as_bool(&self) -> bool {
        match self {
            Value::Bool(b) => *b,
            other => panic!("expected a boolean reply, got {other:?}"),
        }
    }

    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Nil)
    }

    /// `+OK`
    pub fn is_ok(&self) -> bool {
        matches!(self, Value::Simple(s) if s == "OK")
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Value::Error(_))
    }

    /// True for an error reply whose text starts with `prefix` (e.g. "ERR", "WRONGTYPE").
    pub fn is_error_starting(&self, prefix: &str) -> bool {
        matches!(self, Value::Error(e) if e.starts_with(prefix))
    }

    /// The text of an error reply.
    #[track_caller]
    pub fn as_error(&self) -> &str {
        match self {
            Value::Error(e) => e,
            other => panic!("expected an error reply, got {other:?}"),
        }
    }

    /// Elements of an array, set or push reply.
    #[track_caller]
    pub fn as_array(&self) -> &[Value] {
        match self {
            Value::Array(v) | Value::Set(v) | Value::Push(v) => v,
            other => panic!("expected an array reply, got {other:?}"),
        }
    }

    /// Pairs of a RESP3 map reply.
    #[track_caller]
    pub fn as_map(&self) -> &[(Value, Value)] {
        match self {
            Value::Map(m) => m,
            other => panic!("expected a map reply, got {other:?}"),
        }
    }

    /// Looks up `name` in a RESP3 map or a RESP2 flat `[k1, v1, k2, v2, ...]` array.
    #[track_caller]
    pub fn field(&self, name: &str) -> Option<&Value> {
        let key_matches = |k: &Value| match k {
            Value::Bulk(b) | Value::Verbatim(b) => b.as_slice() == name.as_bytes(),
            Value::Simple(s) => s == name,
            _ => false,
        };
        match self {
            Value::Map(m) => m.iter().find(|(k, _)| key_matches(k)).map(|(_, v)| v),
            Value::Array(a) => a
                .chunks(2)
                .find(|kv| kv.len() == 2 && key_matches(&kv[0]))
                .map(|kv| &kv[1]),
            other => panic!("expected a map or flat key/value array, got {other:?}"),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn bytes(f: &mut fmt::Formatter<'_>, b: &[u8]) -> fmt::Result {
            const MAX: usize = 200;
            if b.len() > MAX {
                write!(f, "b\"{}\"...({} bytes)", b[..MAX].escape_ascii(), b.len())
            } else {
                write!(f, "b\"{}\"", b.escape_ascii())
            }
        }
        match self {
            Value::Nil => write!(f, "Nil"),
            Value::Int(i) => write!(f, "Int({i})"),
            Value::Bulk(b) => {
                write!(f, "Bulk(")?;
                bytes(f, b)?;
                write!(f, ")")
            }
            Value::Verbatim(b) => {
                write!(f, "Verbatim(")?;
                bytes(f, b)?;
                write!(f, ")")
            }
            Value::Simple(s) => write!(f, "Simple({s:?})"),
            Value::Error(s) => write!(f, "Error({s:?})"),
            Value::Double(s) => write!(f, "Double({s})"),
            Value::BigNumber(s) => write!(f, "BigNumber({s})"),
            Value::Bool(b) => write!(f, "Bool({b})"),
            Value::Array(v) => f.debug_tuple("Array").field(v).finish(),
            Value::Set(v) => f.debug_tuple("Set").field(v).finish(),
            Value::Push(v) => f.debug_tuple("Push").field(v).finish(),
            Value::Map(m) => {
                write!(f, "Map")?;
                f.debug_map()
                    .entries(m.iter().map(|(k, v)| (k, v)))
                    .finish()
            }
        }
    }
}

/// What the parser met: a value, or the end marker of a streamed aggregate.
enum Frame {
    Value(Value),
    End,
}

fn protocol_error(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// A blocking connection to one server.
pub struct Conn {
    reader: BufReader<TcpStream>,
    port: u16,
    read_timeout: Duration,
    /// The attribute (`|`) that preceded the last reply read, if any.
    pub last_attribute: Option<Value>,
}

impl Conn {
    /// Connects to 127.0.0.1:`port`; panics if that fails.
    #[track_caller]
    pub fn connect(port: u16) -> Conn {
        match Conn::try_connect(port, Duration::from_secs(5)) {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to 127.0.0.1:{port}: {e}"),
        }
    }

    /// Connects to 127.0.0.1:`port` and switches to RESP3 (`HELLO 3`).
    #[track_caller]
    pub fn connect_resp3(port: u16) -> Conn {
        let mut c = Conn::connect(port);
        let hello = c.q(&["HELLO", "3"]);
        assert!(
            matches!(hello, Value::Map(_)),
            "HELLO 3 on port {port}: expected a map, got {hello:?}"
        );
        c
    }

    pub fn try_connect(port: u16, timeout: Duration) -> io::Result<Conn> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        stream.set_write_timeout(Some(DEFAULT_READ_TIMEOUT))?;
        Ok(Conn {
            reader: BufReader::with_capacity(64 * 1024, stream),
            port,
            read_timeout: DEFAULT_READ_TIMEOUT,
            last_attribute: None,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// How long `read`/`cmd` wait for a reply before panicking (default 30 s).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        let t = timeout.max(Duration::from_millis(1));
        self.reader
            .get_ref()
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
        self.read_timeout = t;
    }

    /// Sends a command (binary-safe args) and reads the next reply.
    #[track_caller]
    pub fn cmd(&mut self, args: &[&[u8]]) -> Value {
        self.send(args);
        self.read()
    }

    /// `cmd` for owned or mixed argument lists, e.g. `Vec<Vec<u8>>` or `Vec<String>`.
    #[track_caller]
    pub fn cmdv<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_ref()).collect();
        self.cmd(&refs)
    }

    /// `cmd` with `&str` args: `conn.q(&["SET", "k", "v"])`.
    #[track_caller]
    pub fn q(&mut self, args: &[&str]) -> Value {
        self.cmdv(args)
    }

    /// `cmd`, returning the I/O error instead of panicking (e.g. for SHUTDOWN).
    pub fn try_cmd(&mut self, args: &[&[u8]]) -> io::Result<Value> {
        self.try_send(args)?;
        self.try_read()
    }

    /// Sends a command, then reads replies until a non-push one, which it
    /// returns together with the push messages (RESP3) that came before it.
    #[track_caller]
    pub fn cmd_collect_push(&mut self, args: &[&[u8]]) -> (Value, Vec<Value>) {
        self.send(args);
        let mut pushes = Vec::new();
        loop {
            match self.read() {
                Value::Push(p) => pushes.push(Value::Push(p)),
                v => return (v, pushes),
            }
        }
    }

    /// Writes a command without reading its reply (pipelining, blocked clients).
    #[track_caller]
    pub fn send(&mut self, args: &[&[u8]]) {
        if let Err(e) = self.try_send(args) {
            panic!("write to 127.0.0.1:{} failed: {e}", self.port);
        }
    }

    /// `send` with `&str` args.
    #[track_caller]
    pub fn send_q(&mut self, args: &[&str]) {
        let refs: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.send(&refs);
    }

    pub fn try_send(&mut self, args: &[&[u8]]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
        buf.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
        for a in args {
            buf.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            buf.extend_from_slice(a);
            buf.extend_from_slice(b"\r\n");
        }
        let mut stream: &TcpStream = self.reader.get_ref();
        stream.write_all(&buf)?;
        stream.flush()
    }

    /// Reads the next reply (a push message is a reply too); panics on I/O
    /// errors or when nothing arrives within the read timeout.
    #[track_caller]
    pub fn read(&mut self) -> Value {
        let (port, timeout) = (self.port, self.read_timeout);
        match self.try_read() {
            Ok(v) => v,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                panic!("no reply from 127.0.0.1:{port} within {timeout:?}")
            }
            Err(e) => panic!("reading from 127.0.0.1:{port} failed: {e}"),
        }
    }

    /// Waits up to `timeout` for the start of the next reply: `None` if nothing
    /// arrived, else the whole reply (read with the normal read timeout, so a
    /// reply is never cut in half).
    #[track_caller]
    pub fn read_with_timeout(&mut self, timeout: Duration) -> Option<Value> {
        if self.reader.buffer().is_empty() {
            let t = timeout.max(Duration::from_millis(1));
            self.reader
                .get_ref()
                .set_read_timeout(Some(t))
                .expect("set_read_timeout");
            let filled = self.reader.fill_buf().map(|b| b.len());
            self.reader
                .get_ref()
                .set_read_timeout(Some(self.read_timeout))
                .expect("set_read_timeout");
            match filled {
                Ok(0) => panic!("connection to 127.0.0.1:{} closed by server", self.port),
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("reading from 127.0.0.1:{} failed: {e}", self.port),
            }
        }
        Some(self.read())
    }

    /// Reads the next reply, returning I/O and protocol errors.
    pub fn try_read(&mut self) -> io::Result<Value> {
        self.last_attribute = None;
        self.read_value()
    }

    fn read_line(&mut self) -> io::Result<Vec<u8>> {
        let mut line = Vec::new();
        let n = self.reader.read_until(b'\n', &mut line)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed by server",
            ));
        }
        if !line.ends_with(b"\r\n") {
            return Err(protocol_error(format!(
                "line not ended by CRLF: {:?}",
                line.escape_ascii().to_string()
            )));
        }
        line.truncate(line.len() - 2);
        Ok(line)
    }

    fn read_exact_crlf(&mut self, len: usize) -> io::Result<Vec<u8>> {
        let mut data = vec![0u8; len + 2];
        self.reader.read_exact(&mut data)?;
        if !data.ends_with(b"\r\n") {
            return Err(protocol_error(format!(
                "bulk of {len} bytes not followed by CRLF"
            )));
        }
        data.truncate(len);
        Ok(data)
    }

    fn read_elements(&mut self, header: &str) -> io::Result<Option<Vec<Value>>> {
        if header == "?" {
            let mut items = Vec::new();
            loop {
                match self.read_frame()? {
                    Frame::Value(v) => items.push(v),
                    Frame::End => return Ok(Some(items)),
                }
            }
        }
        let n = parse_int(header)?;
        if n < 0 {
            return Ok(None);
        }
        let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
        for _ in 0..n {
            items.push(self.read_value()?);
        }
        Ok(Some(items))
    }

    fn read_pairs(&mut self, header: &str) -> io::Result<Vec<(Value, Value)>> {
        if header == "?" {
            let flat = self.read_elements(header)?.unwrap_or_default();
            if flat.len() % 2 != 0 {
                return Err(protocol_error("map with an odd number of elements".into()));
            }
            let mut it = flat.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            return Ok(pairs);
        }
        let n = parse_int(header)?.max(0) as usize;
        let mut pairs = Vec::with_capacity(n.min(1 << 16));
        for _ in 0..n {
            let k = self.read_value()?;
            let v = self.read_value()?;
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    /// A value inside an aggregate (a '.' end marker there is an error unless streamed).
    fn read_value(&mut self) -> io::Result<Value> {
        match self.read_frame()? {
            Frame::Value(v) => Ok(v),
            Frame::End => Err(protocol_error("unexpected '.' end marker".into())),
        }
    }

    fn read_frame(&mut self) -> io::Result<Frame> {
        let line = self.read_line()?;
        let Some((&kind, rest)) = line.split_first() else {
            return Err(protocol_error("empty reply line".into()));
        };
        let text = std::str::from_utf8(rest)
            .map_err(|_| protocol_error(format!("non UTF-8 header: {:?}", line)))?
            .to_string();
        let v = match kind {
            b'+' => Value::Simple(text),
            b'-' => Value::Error(text),
            b':' => Value::Int(parse_int(&text)?),
            b'_' => Value::Nil,
            b',' => Value::Double(text),
            b'(' => Value::BigNumber(text),
            b'#' => match text.as_str() {
                "t" => Value::Bool(true),
                "f" => Value::Bool(false),
                _ => return Err(protocol_error(format!("bad boolean #{text}"))),
            },
            b'$' if text == "?" => {
                // Streamed string: `;len` chunks until `;0`.
                let mut data = Vec::new();
                loop {
                    let chunk = self.read_line()?;
                    let len = match chunk.split_first() {
                        Some((b';', n)) => parse_int(std::str::from_utf8(n).unwrap_or("x"))?,
                        _ => return Err(protocol_error("bad streamed string chunk".into())),
                    };
                    if len == 0 {
                        break;
                    }
                    data.extend(self.read_exact_crlf(len as usize)?);
                }
                Value::Bulk(data)
            }
            b'$' | b'!' | b'=' => {
                let len = parse_int(&text)?;
                if len < 0 {
                    Value::Nil
                } else {
                    let data = self.read_exact_crlf(len as usize)?;
                    match kind {
                        b'$' => Value::Bulk(data),
                        b'!' => Value::Error(String::from_utf8_lossy(&data).into_owned()),
                        _ => {
                            // "txt:" / "mkd:" prefix.
                            if data.len() >= 4 && data[3] == b':' {
                                Value::Verbatim(data[4..].to_vec())
                            } else {
                                Value::Verbatim(data)
                            }
                        }
                    }
                }
            }
            b'*' => match self.read_elements(&text)? {
                Some(items) => Value::Array(items),
                None => Value::Nil,
            },
            b'~' => Value::Set(self.read_elements(&text)?.unwrap_or_default()),
            b'>' => Value::Push(self.read_elements(&text)?.unwrap_or_default()),
            b'%' => Value::Map(self.read_pairs(&text)?),
            b'|' => {
                // Attribute: metadata for the reply that follows; kept aside.
                let attr = Value::Map(self.read_pairs(&text)?);
                let v = self.read_value()?;
                self.last_attribute = Some(attr);
                v
            }
            b'.' if text.is_empty() => return Ok(Frame::End),
            _ => {
                return Err(protocol_error(format!(
                    "unknown reply type in line {:?}",
                    line.escape_ascii().to_string()
                )))
            }
        };
        Ok(Frame::Value(v))
    }
}

fn parse_int(s: &str) -> io::Result<i64> {
    s.parse()
        .map_err(|_| protocol_error(format!("bad integer {s:?}")))
}
