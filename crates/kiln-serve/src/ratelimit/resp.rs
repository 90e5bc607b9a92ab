//! A minimal Redis client: RESP2 over a tokio `TcpStream` (arrays, bulk and simple strings,
//! integers, errors), `redis://` URLs and one connection per command at a time.
//!
//! Only what the rate limiter needs: `AUTH`, `SELECT`, `SCRIPT LOAD`, `EVALSHA`, `EVAL`. It
//! uses the socket's `readable`/`try_read` directly, so it needs no tokio feature beyond `net`.

use std::io;

use tokio::net::TcpStream;

use super::StoreError;

/// Longest reply line or bulk string accepted: far more than any reply the limiter asks for.
const MAX_REPLY_BYTES: usize = 1 << 20;
/// Most elements in a reply array.
const MAX_ARRAY_LEN: usize = 1024;

/// Where Redis is, parsed from `redis://[[user]:password@]host[:port][/db]`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct RedisAddress {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) db: u32,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

impl std::fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password stays out of logs and `Debug` output.
        f.debug_struct("RedisAddress")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RedisAddress {
    /// Parses a `redis://` URL.
    ///
    /// # Errors
    /// A sentence saying what is wrong with it.
    pub(crate) fn parse(url: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("redis://").ok_or_else(|| {
            if url.starts_with("rediss://") {
                format!("{url:?}: TLS to Redis (rediss://) is not supported; use redis://")
            } else {
                format!("{url:?} is not a redis://host[:port][/db] URL")
            }
        })?;
        let (credentials, rest) = match rest.rsplit_once('@') {
            Some((c, r)) => (Some(c), r),
            None => (None, rest),
        };
        let (authority, db) = match rest.split_once('/') {
            Some((a, "")) => (a, 0),
            Some((a, db)) => (
                a,
                db.parse()
                    .map_err(|_| format!("{url:?}: the database {db:?} is not a number"))?,
            ),
            None => (rest, 0),
        };
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
            (host, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(format!("{url:?} names no host"));
        }
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("{url:?}: the port {p:?} is not a number"))?,
            None => 6379,
        };
        let (username, password) = match credentials {
            None => (None, None),
            Some(c) => match c.split_once(':') {
                Some((user, password)) => (
                    Some(user.to_string()).filter(|u| !u.is_empty()),
                    Some(password.to_string()),
                ),
                None => (None, Some(c.to_string())),
            },
        };
        Ok(Self {
            host: host.to_string(),
            port,
            db,
            username,
            password: password.filter(|p| !p.is_empty()),
        })
    }
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nabc` (`None`: `$-1`)
    Bulk(Option<Vec<u8>>),
    /// `*2\r\n...` (`None`: `*-1`)
    Array(Option<Vec<Value>>),
}

/// One connection to Redis.
#[derive(Debug)]
pub(crate) struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    /// Connects, authenticates and selects the database.
    ///
    /// # Errors
    /// The connection failed or Redis refused `AUTH` or `SELECT`.
    pub(crate) async fn open(address: &RedisAddress) -> Result<Self, StoreError> {
        let stream = TcpStream::connect((address.host.as_str(), address.port)).await?;
        stream.set_nodelay(true)?;
        let mut connection = Self {
            stream,
            buffer: Vec::new(),
        };
        if let Some(password) = &address.password {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = &address.username {
                auth.push(user.as_bytes());
            }
            auth.push(password.as_bytes());
            connection.ok(&auth).await?;
        }
        if address.db != 0 {
            let db = address.db.to_string();
            connection.ok(&[b"SELECT", db.as_bytes()]).await?;
        }
        Ok(connection)
    }

    /// Runs a command whose reply must not be an error.
    async fn ok(&mut self, args: &[&[u8]]) -> Result<Value, StoreError> {
        match self.command(args).await? {
            Value::Error(e) => Err(StoreError::Reply(e)),
            v => Ok(v),
        }
    }

    /// Sends one command and reads its reply (an error reply is a `Value::Error`, not `Err`).
    ///
    /// If the future is dropped part way, the connection is left mid-reply: the caller must then
    /// drop it rather than reuse it.
    ///
    /// # Errors
    /// I/O errors, a closed connection, a malformed reply.
    pub(crate) async fn command(&mut self, args: &[&[u8]]) -> Result<Value, StoreError> {
        self.write_all(&encode(args)).await?;
        loop {
            if let Some((value, used)) = parse(&self.buffer)? {
                self.buffer.drain(..used);
                return Ok(value);
            }
            self.fill().await?;
        }
    }

    async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            self.stream.writable().await?;
            match self.stream.try_write(bytes) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        if self.buffer.len() > MAX_REPLY_BYTES + 64 {
            return Err(StoreError::Protocol("reply too long".into()));
        }
        let mut chunk = [0_u8; 4096];
        loop {
            self.stream.readable().await?;
            match self.stream.try_read(&mut chunk) {
                Ok(0) => {
                    return Err(StoreError::Io(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "Redis closed the connection",
                    )));
                }
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A command as a RESP array of bulk strings.
pub(crate) fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// One reply from the front of `buffer` and the bytes it took, or `None` if more must be read.
///
/// # Errors
/// A reply that is not RESP2 or is over the size limits.
pub(crate) fn parse(buffer: &[u8]) -> Result<Option<(Value, usize)>, StoreError> {
    parse_nested(buffer, 0)
}

/// Arrays nest at most this deep (kiln's replies nest once); a deeper reply is refused rather
/// than followed down the stack.
const MAX_DEPTH: usize = 8;

fn parse_nested(buffer: &[u8], depth: usize) -> Result<Option<(Value, usize)>, StoreError> {
    if depth > MAX_DEPTH {
        return Err(StoreError::Protocol("reply arrays nest too deep".into()));
    }
    let Some(end) = buffer.windows(2).position(|w| w == b"\r\n") else {
        return if buffer.len() > MAX_REPLY_BYTES {
            Err(StoreError::Protocol("reply line too long".into()))
        } else {
            Ok(None)
        };
    };
    let Some((&kind, line)) = buffer[..end].split_first() else {
        return Err(StoreError::Protocol("empty reply line".into()));
    };
    let text = || String::from_utf8_lossy(line).into_owned();
    let number = || -> Result<i64, StoreError> {
        std::str::from_utf8(line)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| StoreError::Protocol(format!("bad number {:?}", text())))
    };
    let after = end + 2;
    Ok(Some(match kind {
        b'+' => (Value::Simple(text()), after),
        b'-' => (Value::Error(text()), after),
        b':' => (Value::Integer(number()?), after),
        b'$' => {
            let n = number()?;
            if n < 0 {
                (Value::Bulk(None), after)
            } else {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_REPLY_BYTES {
                    return Err(StoreError::Protocol("bulk reply too long".into()));
                }
                if buffer.len() < after + n + 2 {
                    return Ok(None);
                }
                if &buffer[after + n..after + n + 2] != b"\r\n" {
                    return Err(StoreError::Protocol("bulk reply not ended by CRLF".into()));
                }
                (
                    Value::Bulk(Some(buffer[after..after + n].to_vec())),
                    after + n + 2,
                )
            }
        }
        b'*' => {
            let n = number()?;
            if n < 0 {
                (Value::Array(None), after)
            } else {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > MAX_ARRAY_LEN {
                    return Err(StoreError::Protocol("reply array too long".into()));
                }
                let mut items = Vec::with_capacity(n);
                let mut at = after;
                for _ in 0..n {
                    let Some((item, used)) = parse_nested(&buffer[at..], depth + 1)? else {
                        return Ok(None);
                    };
                    items.push(item);
                    at += used;
                }
                (Value::Array(Some(items)), at)
            }
        }
        other => {
            return Err(StoreError::Protocol(format!(
                "unknown reply type {:?}",
                char::from(other)
            )));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let a = RedisAddress::parse("redis://127.0.0.1:6380/2").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("127.0.0.1", 6380, 2));
        assert_eq!(a.password, None);
        let a = RedisAddress::parse("redis://:s3cret@cache").unwrap();
        assert_eq!((a.host.as_str(), a.port, a.db), ("cache", 6379, 0));
        assert_eq!(a.password.as_deref(), Some("s3cret"));
        assert_eq!(a.username, None);
        assert!(!format!("{a:?}").contains("s3cret"));
        let a = RedisAddress::parse("redis://kiln:pw@[::1]:7000/").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("::1", 7000));
        assert_eq!(a.username.as_deref(), Some("kiln"));
        for bad in [
            "http://x",
            "rediss://x",
            "redis://",
            "redis://h:port",
            "redis://h/x",
        ] {
            assert!(RedisAddress::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn replies_parse_whole_or_ask_for_more() {
        let reply = b"*4\r\n:1\r\n$3\r\nabc\r\n$-1\r\n-NOSCRIPT x\r\n+OK\r\n";
        let (value, used) = parse(reply).unwrap().unwrap();
        assert_eq!(
            value,
            Value::Array(Some(vec![
                Value::Integer(1),
                Value::Bulk(Some(b"abc".to_vec())),
                Value::Bulk(None),
                Value::Error("NOSCRIPT x".into()),
            ]))
        );
        assert_eq!(&reply[used..], b"+OK\r\n");
        for cut in 0..used {
            assert_eq!(parse(&reply[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(parse(b"?\r\n").is_err());
        assert!(parse(b":x\r\n").is_err());
        assert_eq!(
            encode(&[b"GET", b"k"]),
            b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n".to_vec()
        );
    }
}
