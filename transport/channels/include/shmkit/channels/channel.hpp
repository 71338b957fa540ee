/// Channel: request/response between processes through shared memory, in the spirit of gVisor's
/// flipcall/lisafs. A channel is a control block plus W packet windows in shared memory; each
/// connected client owns one window. A call:
///
///   client: writes a wire frame (wire.hpp: header {length, id, tag} + payload) into its window's
///           request area, stores turn = server, notifies the server's doorbell (an EventCount:
///           a system call only if the server sleeps), then waits on its window's `replied`
///           EventCount until the turn is the client's again;
///   server: one loop serves every window: finds turn == server, checks the frame, dispatches on
///           the message id to the registered handler, which marshals its reply straight into the
///           window's reply area; stores turn = client and notifies the window's `replied`.
/// Every wait goes through shmkit::await_until (locks/event_count.hpp): it spins only while the
/// other side runs on another CPU (each side publishes its Presence in the channel; see
/// spin_policy.hpp), for a bounded time, and otherwise sleeps at once.
///
/// Request and reply have separate areas so a handler can read the request while it writes the
/// reply (no aliasing); neither side copies a payload through a socket or the kernel. Each side
/// copies the peer's frame header out of shared memory and checks it before use; payloads are read
/// in place, bounded by that checked copy, so a peer that scribbles on a frame while it is being
/// read can only garble its own message, never make the reader go out of bounds.
///
/// Handshake: connect() sends a wire Hello in the window and gets the server's Hello back: the
/// message ids it serves and its maximum frame; frames are then bounded by the minimum of both
/// sides (transport::wire::negotiate_max). A request for an id without a handler gets an Error reply
/// (EOPNOTSUPP); a malformed frame gets Error(EPROTO / EMSGSIZE). The connection stays usable.
///
/// Death of a peer, and why it is detected the way it is. Each side holds a robust shmkit::Lock
/// for its lifetime — the server the channel's server_lock, each client its window's client_lock.
/// The kernel's robust-futex list marks a dead holder's lock word FUTEX_OWNER_DIED the moment the
/// process exits, immune to pid reuse (a recorded pid alone would be fooled: pid_max is 32768).
/// A waiter cannot block on its hand-off word and on the peer's lock word at once with FUTEX_WAIT,
/// and the kernel only wakes a robust word's waiters when FUTEX_WAITERS is set in it (the Lock's
/// private encoding), so the sleeping side sleeps in slices of kDeathCheckInterval and, after each,
/// probes the peer's lock with try_acquire(): would_block means alive, owner_died means dead. That
/// probe is one atomic load-and-CAS, so the check costs nothing measurable, and a peer's death is
/// reported within one slice (10 ms) — prompt, and never a hang. A client whose server dies gets
/// ChannelStatus::peer_closed; a server never waits for a client (so it cannot hang on one), learns
/// of a dead client by the same probe of its client_lock when idle (on_client_gone), and a window
/// whose client died is reclaimed by the server's probe or by the next connect() (which inherits
/// the client_lock with owner_died, waits for the server to finish any request still in flight,
/// and starts afresh).
///
/// Threads: a ChannelClient is used by one thread at a time; a ChannelServer's serve() runs in one
/// thread. Objects are process-local and must be created after fork (locks are per-thread).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "shmkit/locks/event_count.hpp"
#include "shmkit/locks/lock.hpp"
#include "shmkit/locks/spin_policy.hpp"
#include "shmkit/sys/futex_word.hpp"
#include "shmkit/sys/process.hpp"
#include "shmkit/transport/wire.hpp"

namespace shmkit {

inline constexpr auto kDeathCheckInterval = std::chrono::milliseconds(10);

enum class ChannelStatus : std::uint8_t {
  ok = 0,
  error_reply,      // the server answered with a wire Error frame (CallResult::error_code)
  peer_closed,      // the server is gone (died or stopped), or this client is not connected
  timed_out,        // the deadline passed; the connection is resynchronised on the next call
  too_large,        // the request exceeds the negotiated maximum frame
  protocol,         // the peer wrote a malformed frame into the window
  no_free_window,   // try_connect(): every window has a live client
  not_recoverable,  // a lock of the channel was left unrepaired
};
const char* to_string(ChannelStatus s) noexcept;

struct CallResult {
  ChannelStatus status = ChannelStatus::ok;
  int error_code = 0;                 // positive errno of an Error reply
  std::string_view error_detail;      // points into the window, valid until the next call
  std::span<const std::byte> reply;   // reply payload in the window, valid until the next call
};

/// -- shared layout ---------------------------------------------------------------------------------

/// INVARIANT1  turn ∈ {kClientTurn, kServerTurn}; only the side whose turn it is touches the
///             window's areas; the hand-off store is a release, the read of turn an acquire.
/// INVARIANT2  a frame in an area has kHeaderSize <= length <= area size (checked on every read).
struct ChannelWindow {
  static constexpr std::uint32_t kClientTurn = 0;
  static constexpr std::uint32_t kServerTurn = 1;
  alignas(64) std::atomic<std::uint32_t> turn;
  EventCount replied;                            // notified by the server after turn = client
  std::atomic<std::uint32_t> epoch;              // server epoch the client connected under
  Presence client_presence;                      // what the window's client does now (hint)
  sys::ProcessIdentity client;                   // informative (shmkit info, debugging)
  alignas(64) Lock client_lock;                  // held by the connected client (robust)
};
static_assert(std::is_standard_layout_v<ChannelWindow>);

/// INVARIANT3  window i starts at windows_offset + i * window_stride; its request area at
///             + kAreaOffset, its reply area at + kAreaOffset + area_size; all inside total_bytes.
struct ChannelControl {
  static constexpr std::uint64_t kMagic = 0x316c6e6e6168434bULL;  // "KChannl1"
  static constexpr std::uint32_t kVersion = 2;  // 2: EventCount + Presence wait words
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t windows;
  std::uint32_t area_size;        // bytes of each request and reply area = the server's max frame
  std::uint32_t reserved;
  std::uint64_t window_stride;
  std::uint64_t windows_offset;
  std::uint64_t total_bytes;
  alignas(64) Lock server_lock;   // held by the serving process for its life (robust)
  sys::ProcessIdentity server;
  std::atomic<std::uint32_t> server_epoch;  // bumped by each server start; 0 = never served
  std::atomic<std::uint32_t> server_up;     // 1 between a server's start and its stop
  alignas(64) EventCount doorbell;  // notified by a client after turn = server (and by wake())
  Presence server_presence;         // what the server does now (hint)
};
static_assert(std::is_standard_layout_v<ChannelControl>);

/// A process-local handle on a channel in shared memory.
class Channel {
 public:
  static constexpr std::size_t kAreaOffset = (sizeof(ChannelWindow) + 63) / 64 * 64;
  static std::size_t required_bytes(std::uint32_t windows, std::uint32_t max_message) noexcept;
  /// Constructs a channel with `windows` connection slots whose frames are at most max_message
  /// bytes (transport::wire::kMinMaxMessage..transport::wire::kAbsoluteMaxMessage). mem: 64-byte aligned, shared.
  static Channel create(void* mem, std::size_t bytes, std::uint32_t windows,
                        std::uint32_t max_message = 64 * 1024);
  static Channel attach(void* mem, std::size_t bytes);

  Channel() = default;
  ChannelControl* control() const noexcept { return ctl_; }
  std::uint32_t windows() const noexcept { return windows_; }
  std::uint32_t area_size() const noexcept { return area_size_; }
  ChannelWindow& window(std::uint32_t i) const noexcept;
  std::byte* request_area(std::uint32_t i) const noexcept;
  std::byte* reply_area(std::uint32_t i) const noexcept;

 private:
  ChannelControl* ctl_ = nullptr;
  std::uint32_t windows_ = 0;     // local copies, validated at attach
  std::uint32_t area_size_ = 0;
  std::uint64_t stride_ = 0;
  std::uint64_t windows_offset_ = 0;
};

/// -- server ------------------------------------------------------------------------------------

struct Request {
  transport::wire::MsgId id;
  transport::wire::Tag tag;
  std::span<const std::byte> payload;  // in the window; valid during the handler
  std::uint32_t window;                // which connection
};
/// Writes the reply payload with `reply` (header already reserved; the reply carries the request's
/// id and tag) and returns 0, or returns a positive errno to send an Error reply instead.
using Handler = std::function<int(const Request& req, transport::wire::Writer& reply)>;

class ChannelServer {
 public:
  explicit ChannelServer(Channel ch);
  ~ChannelServer();
  ChannelServer(const ChannelServer&) = delete;
  ChannelServer& operator=(const ChannelServer&) = delete;

  /// Registers before start(); ids 0..15 belong to the wire core and are refused (invalid_argument).
  void handle(transport::wire::MsgId id, Handler h);
  /// Takes the server_lock (a previous server that died is taken over), records this process,
  /// bumps the epoch. Throws Error(already_exists) when a live server holds the channel.
  void start();
  /// Serves until `stop` becomes true or the deadline passes. Returns requests served.
  std::uint64_t serve(const std::atomic<bool>& stop, sys::Deadline deadline = sys::kNoDeadline);
  /// Serves every window that has a request now; never blocks. Returns requests served.
  std::uint64_t poll();
  /// Marks the channel unserved (clients then get peer_closed) and releases the server_lock.
  void stop() noexcept;
  /// Wakes a serve() that sleeps (for example after setting its stop flag from another thread).
  void wake() noexcept;
  /// Called (in the serving thread) with the window index of each client found dead, so per-
  /// connection state can be dropped. serve() looks whenever it has been idle for its sleep slice
  /// (100 ms); reap_dead_clients() looks now and returns how many it found.
  void on_client_gone(std::function<void(std::uint32_t window)> fn) { on_client_gone_ = std::move(fn); }
  std::uint32_t reap_dead_clients();

  /// The longest serve() spins while idle before sleeping (only while a client runs on another
  /// CPU; spin_policy.hpp). 0 = sleep at once.
  void set_spin(std::chrono::nanoseconds max) noexcept { spin_.set_max_ns(spin_ns(max)); }

 private:
  void serve_window(std::uint32_t i) noexcept;
  bool any_request() const noexcept;
  static std::uint32_t spin_ns(std::chrono::nanoseconds max) noexcept;

  Channel ch_;
  std::vector<Handler> handlers_;  // indexed by id; empty function = unsupported
  std::vector<transport::wire::MsgId> ids_;
  bool started_ = false;
  SpinPolicy spin_;
  std::uint32_t last_window_ = 0;  // the window served last: its client is the likely next caller
  std::function<void(std::uint32_t)> on_client_gone_;
  friend class ChannelClient;
};

/// -- client ------------------------------------------------------------------------------------

class ChannelClient {
 public:
  ChannelClient() = default;
  ~ChannelClient();
  ChannelClient(ChannelClient&& o) noexcept;
  ChannelClient& operator=(ChannelClient&& o) noexcept;
  ChannelClient(const ChannelClient&) = delete;
  ChannelClient& operator=(const ChannelClient&) = delete;

  /// Claims a free window and performs the Hello handshake. Throws Error(peer_closed) when no
  /// server serves the channel, Error(out_of_memory) when no window is free, Error(timed_out),
  /// Error(protocol) for a malformed server Hello.
  static ChannelClient connect(Channel ch, sys::Deadline deadline = sys::kNoDeadline);
  /// connect() without exceptions for the expected outcomes: ok (then `out` is connected),
  /// no_free_window, peer_closed, timed_out or protocol. Throws only std::bad_alloc (the Hello's
  /// small vectors).
  [[nodiscard]] static ChannelStatus try_connect(Channel ch, ChannelClient& out,
                                                 sys::Deadline deadline = sys::kNoDeadline);

  /// One round trip: sends `payload` under message `id` and waits for the reply.
  CallResult call(transport::wire::MsgId id, std::span<const std::byte> payload,
                  sys::Deadline deadline = sys::kNoDeadline) noexcept;
  /// Zero-copy form: marshal the request straight into request_payload() (up to max_payload()
  /// bytes), then call_in_place(id, bytes_written).
  std::span<std::byte> request_payload() noexcept;
  CallResult call_in_place(transport::wire::MsgId id, std::size_t payload_size,
                           sys::Deadline deadline = sys::kNoDeadline) noexcept;

  bool connected() const noexcept { return connected_; }
  std::uint32_t max_message() const noexcept { return max_message_; }
  std::size_t max_payload() const noexcept { return max_message_ - transport::wire::kHeaderSize; }
  const transport::wire::Hello& server_hello() const noexcept { return server_hello_; }
  std::uint32_t window_index() const noexcept { return index_; }
  /// Releases the window (also done by the destructor).
  void disconnect() noexcept;

  /// The longest a call spins for its reply before sleeping (only while the server runs on another
  /// CPU; spin_policy.hpp). 0 = sleep at once.
  void set_spin(std::chrono::nanoseconds max) noexcept { spin_.set_max_ns(ChannelServer::spin_ns(max)); }

 private:
  /// Hands the window to the server and waits for it back.
  ChannelStatus exchange(sys::Deadline deadline) noexcept;
  /// Waits until the turn is the client's: ok, timed_out (in_flight_ set) or peer_closed (the
  /// server died or stopped; the window is released).
  ChannelStatus await_turn(sys::Deadline deadline) noexcept;
  bool server_alive() noexcept;

  Channel ch_;
  std::uint32_t index_ = 0;
  bool connected_ = false;
  bool in_flight_ = false;  // a previous call timed out with the window still the server's
  std::uint32_t epoch_ = 0;
  std::uint32_t max_message_ = 0;
  transport::wire::Tag next_tag_ = 1;
  transport::wire::Hello server_hello_;
  SpinPolicy spin_;
};

}  // namespace shmkit
