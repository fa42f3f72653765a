# The regime of one symbol: the mean of its last 5 prices against the mean of all.
# More than 1% above: bull; more than 1% below: bear; otherwise flat.
{
    if (match($0, /"price":[-0-9.]+/)) {
        n++
        p[n] = substr($0, RSTART + 8, RLENGTH - 8) + 0
        sum += p[n]
    }
}
END {
    if (n == 0) {
        printf "{\"symbol\":\"%s\",\"prices\":0,\"regime\":\"unknown\"}\n", symbol
        exit
    }
    k = n < 5 ? n : 5
    for (i = n - k + 1; i <= n; i++) recent += p[i]
    recent /= k
    mean = sum / n
    regime = "flat"
    if (recent > mean * 1.01) regime = "bull"
    if (recent < mean * 0.99) regime = "bear"
    printf "{\"symbol\":\"%s\",\"prices\":%d,\"last\":%.2f,\"mean\":%.2f,\"recent\":%.2f,\"regime\":\"%s\"}\n", symbol, n, p[n], mean, recent, regime
}
