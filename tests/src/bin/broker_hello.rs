//! A minimal broker client for the tests: connects to the socket given as
//! the first argument, says Hello with a process page (as the shim does, but
//! without CUDA, so it can run as any user), and prints the tenant the
//! broker put it in (`tenant=<name>`), or `refused=<reason>`.

use tslice_tests::raw::{HelloSpec, RawClient};

fn main() {
    let path = std::env::args().nth(1).expect("usage: broker_hello SOCKET");
    let mut c = RawClient::connect(path.as_ref()).expect("connect to the broker");
    match c.hello(&HelloSpec::default()) {
        Ok(tenant) => println!("tenant={tenant}"),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => println!("refused={e}"),
        Err(e) => panic!("hello: {e}"),
    }
}
