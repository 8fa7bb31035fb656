//! Blocking RESP2/RESP3 client for integration tests: the `redis` crate
//! encodes commands and parses replies; this file owns the socket (timeouts,
//! waiting for a reply that may not come) and maps the crate's replies to
//! [`Value`], which the tests compare against.
//!
//! Server errors come back as `Value::Error`; I/O failures (connection closed,
//! reply timeout, protocol garbage) panic with a message naming the port, as
//! they always mean the test failed.
//!
//! Why not `redis::Connection` (1.8.2): after a read timeout it drops the
//! reply that comes later (it counts it as one to skip), so a blocked command
//! could not be polled with [`Conn::read_with_timeout`] and then read: seen
//! with BLPOP, 100 ms, LPUSH, and the next read timing out.

use std::fmt;
use std::io::{self, Read, Write};
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
    /// `$`
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
    /// RESP3 `,`, as Rust prints the parsed number (`3.141`, `inf`, `-inf`, `NaN`).
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

/// A blocking connection to one server.
pub struct Conn {
    stream: TcpStream,
    /// Keeps bytes read past the current reply (pipelining) and the state of a
    /// reply cut by a timeout, so the next read resumes where this one stopped.
    parser: redis::Parser,
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
            stream,
            parser: redis::Parser::new(),
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
        self.stream
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
        let mut cmd = redis::Cmd::new();
        for a in args {
            cmd.arg(*a);
        }
        (&self.stream).write_all(&cmd.get_packed_command())
    }

    /// Reads the next reply (a push message is a reply too); panics on I/O
    /// errors or when nothing arrives within the read timeout.
    #[track_caller]
    pub fn read(&mut self) -> Value {
        let parsed = self.parser.parse_value(&self.stream);
        self.reply(parsed)
    }

    /// Waits up to `timeout` for the start of the next reply: `None` if nothing
    /// arrived, else the whole reply (read with the normal read timeout, so a
    /// reply is never cut in half).
    #[track_caller]
    pub fn read_with_timeout(&mut self, timeout: Duration) -> Option<Value> {
        let t = timeout.max(Duration::from_millis(1));
        self.stream
            .set_read_timeout(Some(t))
            .expect("set_read_timeout");
        let mut first = FirstBytes {
            stream: &self.stream,
            then: self.read_timeout,
            arrived: false,
        };
        let parsed = self.parser.parse_value(&mut first);
        let arrived = first.arrived;
        self.stream
            .set_read_timeout(Some(self.read_timeout))
            .expect("set_read_timeout");
        match parsed {
            Err(e) if e.is_timeout() && !arrived => None,
            parsed => Some(self.reply(parsed)),
        }
    }

    /// Reads the next reply, returning I/O and protocol errors.
    pub fn try_read(&mut self) -> io::Result<Value> {
        let parsed = self.parser.parse_value(&self.stream);
        self.convert(parsed)
    }

    /// A parsed reply as ours, panicking on I/O and protocol errors.
    #[track_caller]
    fn reply(&mut self, parsed: redis::RedisResult<redis::Value>) -> Value {
        let (port, timeout) = (self.port, self.read_timeout);
        match self.convert(parsed) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                panic!("no reply from 127.0.0.1:{port} within {timeout:?}")
            }
            Err(e) => panic!("reading from 127.0.0.1:{port} failed: {e}"),
        }
    }

    fn convert(&mut self, parsed: redis::RedisResult<redis::Value>) -> io::Result<Value> {
        self.last_attribute = None;
        match parsed {
            Ok(v) => Ok(self.value(v)),
            Err(e) => {
                let kind = if e.is_timeout() {
                    io::ErrorKind::TimedOut
                } else if e.is_connection_dropped() {
                    io::ErrorKind::UnexpectedEof
                } else {
                    io::ErrorKind::InvalidData
                };
                Err(io::Error::new(kind, e.to_string()))
            }
        }
    }

    /// The crate's value as ours: an error keeps its exact text, a push its
    /// kind as the first element, an attribute goes to `last_attribute`.
    fn value(&mut self, v: redis::Value) -> Value {
        use redis::Value as R;
        match v {
            R::Nil => Value::Nil,
            R::Int(i) => Value::Int(i),
            R::BulkString(b) => Value::Bulk(b),
            R::SimpleString(s) => Value::Simple(s),
            R::Okay => Value::Simple("OK".into()),
            R::ServerError(e) => Value::Error(match e.details() {
                Some(detail) => format!("{} {detail}", e.code()),
                None => e.code().to_string(),
            }),
            R::Array(items) => Value::Array(self.values(items)),
            R::Set(items) => Value::Set(self.values(items)),
            R::Map(pairs) => Value::Map(self.pairs(pairs)),
            R::Push { kind, data } => {
                let kind = kind.to_string();
                let head = (!kind.is_empty() || !data.is_empty()).then(|| Value::bulk(kind));
                Value::Push(head.into_iter().chain(self.values(data)).collect())
            }
            R::Attribute { data, attributes } => {
                let attr = Value::Map(self.pairs(attributes));
                let v = self.value(*data);
                self.last_attribute = Some(attr);
                v
            }
            R::Double(d) => Value::Double(d.to_string()),
            R::Boolean(b) => Value::Bool(b),
            R::VerbatimString { text, .. } => Value::Verbatim(text.into_bytes()),
            R::BigNumber(n) => Value::BigNumber(String::from_utf8_lossy(&n).into_owned()),
            other => panic!("reply of a kind this client does not know: {other:?}"),
        }
    }

    fn values(&mut self, items: Vec<redis::Value>) -> Vec<Value> {
        items.into_iter().map(|v| self.value(v)).collect()
    }

    fn pairs(&mut self, pairs: Vec<(redis::Value, redis::Value)>) -> Vec<(Value, Value)> {
        pairs
            .into_iter()
            .map(|(k, v)| (self.value(k), self.value(v)))
            .collect()
    }
}

/// The socket as `read_with_timeout` hands it to the parser: once the first
/// bytes of a reply have come, the rest is waited for with the normal timeout.
struct FirstBytes<'a> {
    stream: &'a TcpStream,
    then: Duration,
    arrived: bool,
}

impl Read for FirstBytes<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.read(buf)?;
        if n > 0 && !self.arrived {
            self.arrived = true;
            self.stream.set_read_timeout(Some(self.then))?;
        }
        Ok(n)
    }
}
