// A SoupBinTCP peer built on Nassau's own SoupBinTCPClient / SoupBinTCPServer, for the
// interoperability tests (tests/test_nassau_interop.py). It prints one line per event on
// stdout, so the test can compare what Nassau saw with what our side sent.
//
//   java NassauPeer client HOST PORT USER PASS SESSION SEQ
//   java NassauPeer server PORT USER PASS SESSION COUNT DROP_AFTER CONNECTIONS
//
// The server serves messages "message N" for N = 1..COUNT as session SESSION. With
// DROP_AFTER > 0 its first connection is closed after that many messages (a dropped
// connection the client must resume from). It exits after CONNECTIONS connections.

import com.paritytrading.nassau.MessageListener;
import com.paritytrading.nassau.soupbintcp.SoupBinTCP;
import com.paritytrading.nassau.soupbintcp.SoupBinTCPClient;
import com.paritytrading.nassau.soupbintcp.SoupBinTCPClientStatusListener;
import com.paritytrading.nassau.soupbintcp.SoupBinTCPServer;
import com.paritytrading.nassau.soupbintcp.SoupBinTCPServerStatusListener;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.ServerSocketChannel;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;

public class NassauPeer {

    static volatile boolean done;

    public static void main(String[] args) throws Exception {
        if (args[0].equals("client"))
            client(args[1], Integer.parseInt(args[2]), args[3], args[4], args[5],
                    Long.parseLong(args[6]));
        else
            server(Integer.parseInt(args[1]), args[2], args[3], args[4],
                    Integer.parseInt(args[5]), Integer.parseInt(args[6]),
                    Integer.parseInt(args[7]));
    }

    static String hex(ByteBuffer buffer) {
        StringBuilder b = new StringBuilder();
        while (buffer.hasRemaining())
            b.append(String.format("%02x", buffer.get()));
        return b.toString();
    }

    static void client(String host, int port, String user, String pass, String session,
            long seq) throws IOException {
        SocketChannel channel = SocketChannel.open(new InetSocketAddress(host, port));
        MessageListener messages = buffer -> System.out.println("MSG " + hex(buffer));
        SoupBinTCPClientStatusListener status = new SoupBinTCPClientStatusListener() {
            public void heartbeatTimeout(SoupBinTCPClient s) {
                System.out.println("TIMEOUT");
                done = true;
            }
            public void loginAccepted(SoupBinTCPClient s, SoupBinTCP.LoginAccepted p) {
                System.out.println("ACCEPTED [" + p.getSession() + "] " + p.getSequenceNumber());
            }
            public void loginRejected(SoupBinTCPClient s, SoupBinTCP.LoginRejected p) {
                System.out.println("REJECTED " + (char) p.getRejectReasonCode());
                done = true;
            }
            public void endOfSession(SoupBinTCPClient s) {
                System.out.println("END");
                done = true;
            }
        };
        SoupBinTCPClient client = new SoupBinTCPClient(channel, messages, status);
        SoupBinTCP.LoginRequest login = new SoupBinTCP.LoginRequest();
        login.setUsername(user);
        login.setPassword(pass);
        login.setRequestedSession(session);
        login.setRequestedSequenceNumber(seq);
        client.login(login);
        while (!done) {
            if (client.receive() < 0) {
                System.out.println("CLOSED");
                break;
            }
            client.keepAlive();
        }
        System.out.flush();
        client.close();
    }

    static void server(int port, String user, String pass, String session, int count,
            int dropAfter, int connections) throws IOException {
        ServerSocketChannel listener = ServerSocketChannel.open();
        listener.bind(new InetSocketAddress("127.0.0.1", port));
        System.out.println("LISTENING " + ((InetSocketAddress) listener.getLocalAddress()).getPort());
        System.out.flush();
        for (int n = 0; n < connections; n++) {
            SocketChannel channel = listener.accept();
            final boolean drop = n == 0 && dropAfter > 0;
            final boolean[] over = {false};
            SoupBinTCPServerStatusListener status = new SoupBinTCPServerStatusListener() {
                public void heartbeatTimeout(SoupBinTCPServer s) {
                    over[0] = true;
                }
                public void loginRequest(SoupBinTCPServer s, SoupBinTCP.LoginRequest p)
                        throws IOException {
                    System.out.println("LOGIN [" + p.getUsername() + "] [" + p.getPassword()
                            + "] [" + p.getRequestedSession() + "] "
                            + p.getRequestedSequenceNumber());
                    System.out.flush();
                    if (!p.getUsername().trim().equals(user)
                            || !p.getPassword().trim().equals(pass)) {
                        reject(s, SoupBinTCP.LOGIN_REJECT_CODE_NOT_AUTHORIZED);
                        return;
                    }
                    String asked = p.getRequestedSession().trim();
                    if (!asked.isEmpty() && !asked.equals(session)) {
                        reject(s, SoupBinTCP.LOGIN_REJECT_CODE_SESSION_NOT_AVAILABLE);
                        return;
                    }
                    long first = p.getRequestedSequenceNumber();
                    if (first == 0)
                        first = count + 1;
                    SoupBinTCP.LoginAccepted accepted = new SoupBinTCP.LoginAccepted();
                    accepted.setSession(session);
                    accepted.setSequenceNumber(first);
                    s.accept(accepted);
                    int sent = 0;
                    for (long i = first; i <= count; i++) {
                        if (drop && sent == dropAfter) {
                            over[0] = true;
                            return;
                        }
                        s.send(ByteBuffer.wrap(("message " + i).getBytes(StandardCharsets.US_ASCII)));
                        sent++;
                    }
                    s.endSession();
                }
                void reject(SoupBinTCPServer s, byte code) throws IOException {
                    SoupBinTCP.LoginRejected rejected = new SoupBinTCP.LoginRejected();
                    rejected.setRejectReasonCode(code);
                    s.reject(rejected);
                }
                public void logoutRequest(SoupBinTCPServer s) {
                    System.out.println("LOGOUT");
                    over[0] = true;
                }
            };
            SoupBinTCPServer server = new SoupBinTCPServer(channel, buffer -> { }, status);
            try {
                while (!over[0]) {
                    if (server.receive() < 0)
                        break;
                    server.keepAlive();
                }
            } catch (IOException e) {
                System.out.println("ERROR " + e.getMessage());
            }
            System.out.flush();
            server.close();
        }
        listener.close();
    }

}
