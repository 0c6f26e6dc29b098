B
f8E5M2_rawJ{ü~<