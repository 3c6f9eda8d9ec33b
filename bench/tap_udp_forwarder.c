// The idle-RTT floor of a userspace TAP <-> UDP forwarder on this machine:
// no cipher, one poll() loop, one frame per syscall (README, "Idle RTT").
//   gcc -O2 -o /tmp/fwd bench/tap_udp_forwarder.c
//   netlab.sh up 3; ip netns exec h2 /tmp/fwd fw0 7000 10.99.0.3 7000 &
//   ip netns exec h3 /tmp/fwd fw0 7000 10.99.0.2 7000 &
//   then address fw0 in both (10.77.0.2/24, 10.77.0.3/24), set it up, and ping.
// Built with -DSPIN it never sleeps: poll() without a timeout, sched_yield()
// when nothing is ready (the busy-poll floor).
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <poll.h>
#include <sched.h>
#include <arpa/inet.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/if.h>
#include <linux/if_tun.h>
int main(int c, char **v){ // fwd TAPNAME LOCALPORT PEERIP PEERPORT
  int t=open("/dev/net/tun",O_RDWR); struct ifreq r; memset(&r,0,sizeof r);
  r.ifr_flags=IFF_TAP|IFF_NO_PI; strncpy(r.ifr_name,v[1],IFNAMSIZ-1);
  if(ioctl(t,TUNSETIFF,&r)<0){perror("tun");return 1;}
  int s=socket(AF_INET,SOCK_DGRAM,0); struct sockaddr_in a={0},p={0};
  a.sin_family=AF_INET;a.sin_port=htons(atoi(v[2]));
  if(bind(s,(void*)&a,sizeof a)<0){perror("bind");return 1;}
  p.sin_family=AF_INET;p.sin_port=htons(atoi(v[4]));inet_pton(AF_INET,v[3],&p.sin_addr);
  char b[65536]; struct pollfd f[2]={{t,POLLIN},{s,POLLIN}};
  for(;;){
#ifdef SPIN
    if(poll(f,2,0)==0){sched_yield();continue;}
#else
    poll(f,2,-1);
#endif
    if(f[0].revents&POLLIN){int n=read(t,b,sizeof b); if(n>0) sendto(s,b,n,0,(void*)&p,sizeof p);}
    if(f[1].revents&POLLIN){int n=recv(s,b,sizeof b,0); if(n>0) write(t,b,n);}
  }
}
