module grpc-balancer.local/tools/pause

go 1.24
